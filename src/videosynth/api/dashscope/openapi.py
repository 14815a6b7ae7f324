"""The OpenAPI description of this dialect, written by hand because its routes are plain Starlette ones.

The routes parse their bodies themselves (FastAPI's per-request validation would cost a fifth of a poll), so
FastAPI cannot derive their schemas. What is written here is checked against the running server by a
property-based suite (tests/test_openapi.py): every answer it draws must match the schema of its status.
The enums come from the catalog and the size table, so the document follows the configured models; the
webhook and event enums come from the domain's event kinds and this dialect's body formats.
"""

from __future__ import annotations

from typing import Any

from videosynth import sizes
from videosynth.api.dashscope.errors import ERRORS
from videosynth.api.dashscope.events import DASHSCOPE_EVENT, FORMATS, STANDARD
from videosynth.api.dashscope.hooks import MAX_HOOK_BODY, MAX_OVERLAP_S, STREAM_KEEPALIVE_S, STREAM_RETRY_MS
from videosynth.api.dashscope.requests import MAX_PAGE_SIZE, SEED_MAX
from videosynth.api.dashscope.routes import SUBMIT_PATH
from videosynth.api.dashscope.uploads import UPLOAD_PATH
from videosynth.api.hooks import MAX_WEBHOOKS_PER_ACCOUNT
from videosynth.catalog import Catalog
from videosynth.media.fetch import MAX_DELIVERY_URL
from videosynth.tasks.models import DeliveryState, EventKind, TaskStatus

Schema = dict[str, Any]

# Up to nine digits, as the server reads them (0 is refused with 400).
PAGE_NUMBER = r"^[0-9]{0,9}$"
WIRE_TIME = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}$"
TAG = "DashScope video synthesis"
#: What the endpoint URL checks accept begins so (the scheme in any letter case); the rest is checked by the
#: server (a host, no user name or password, no whitespace), and answered with 400 otherwise.
HTTP_URL = r"^[Hh][Tt][Tt][Pp][Ss]?://"
# An event's seq, as Last-Event-ID carries it (more than 18 digits, or anything else: 400; empty: from now).
EVENT_ID = r"^[0-9]{0,18}$"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _codes(*statuses: int) -> str:
    """The error codes of the table that answer with one of ``statuses``, for a response's description."""
    codes = sorted({e.code for e in ERRORS.values() if e.status in statuses})
    return ", ".join(f"`{c}`" for c in codes)


def _error(description: str, *, retry_after: bool = False, should_retry: bool = True) -> Schema:
    headers: Schema = {"x-request-id": {"$ref": "#/components/headers/RequestId"}}
    if should_retry:
        headers["x-should-retry"] = {"$ref": "#/components/headers/ShouldRetry"}
    if retry_after:
        headers["Retry-After"] = {"$ref": "#/components/headers/RetryAfter"}
    return {
        "description": description,
        "headers": headers,
        "content": {"application/json": {"schema": _ref("Error")}},
    }


def _ok(description: str, schema: Schema, extra_headers: Schema | None = None) -> Schema:
    headers: Schema = {"x-request-id": {"$ref": "#/components/headers/RequestId"}, **(extra_headers or {})}
    return {
        "description": description,
        "headers": headers,
        "content": {"application/json": {"schema": schema}},
    }


def _auth_errors() -> Schema:
    return {"401": _error("No key, or a key that is not valid or was revoked: `InvalidApiKey`.")}


def _store_errors() -> Schema:
    return {
        "503": _error(
            "The task store cannot be reached: `ServiceUnavailable` (retry later).", should_retry=False
        )
    }


def _throttled(what: str) -> Schema:
    return {"429": _error(what, retry_after=True, should_retry=False)}


def _answer(output: Schema) -> Schema:
    """An extension's answer: ``request_id`` and its ``output``."""
    return {
        "type": "object",
        "required": ["request_id", "output"],
        "properties": {"request_id": {"type": "string"}, "output": output},
    }


def _hook_body_errors(what: str) -> Schema:
    return {
        "400": _error(f"The body is not a JSON object, or {what}: `InvalidParameter`."),
        "413": _error(f"The body is over {MAX_HOOK_BODY // 1024} KiB: `InvalidParameter`."),
    }


def _webhook_schemas() -> Schema:
    """The extension's webhooks, signing secrets and deliveries."""
    events = [k.value for k in EventKind]
    formats = list(FORMATS)
    told = "; ".join(f"`{f}`: {', '.join(f'`{k.value}`' for k in kinds)}" for f, kinds in FORMATS.items())
    secret = {
        "type": "string",
        "pattern": "^whsec_",
        "description": "`whsec_<base64>`, as Standard Webhooks.",
    }
    return {
        "WebhookCreate": {
            "type": "object",
            "required": ["url"],
            "description": "Unknown fields are ignored.",
            "properties": {
                "url": {
                    "type": "string",
                    "maxLength": MAX_DELIVERY_URL,
                    "pattern": HTTP_URL,
                    "description": "Where the events are POSTed: http or https, a host, no user name or "
                    "password. A host that is not a public address is refused (unless the server allows "
                    "private media addresses).",
                },
                "events": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "string", "enum": events},
                    "description": f"Which status changes to send; default: all the format can tell ({told}).",
                },
                "format": {
                    "type": "string",
                    "enum": formats,
                    "description": f"The body: `{STANDARD}` (default) is the `GET /api/v1/tasks/{{task_id}}` "
                    f"answer; `{DASHSCOPE_EVENT}` is the hosted service's `AsyncTaskFinish` CloudEvent.",
                },
                "include_result": {
                    "type": "boolean",
                    "description": f"`{DASHSCOPE_EVENT}` only (default true): the event's `output_result`.",
                },
            },
        },
        "Webhook": {
            "type": "object",
            "required": ["webhook_id", "url", "events", "format", "include_result", "created_at"],
            "properties": {
                "webhook_id": {"type": "string", "pattern": "^wh_"},
                "url": {"type": "string"},
                "events": {"type": "array", "items": {"type": "string", "enum": events}},
                "format": {"type": "string", "enum": formats},
                "include_result": {"type": "boolean"},
                "created_at": {"type": "string", "pattern": WIRE_TIME},
            },
        },
        "WebhookAnswer": _answer(_ref("Webhook")),
        "WebhookList": _answer(
            {
                "type": "object",
                "required": ["webhooks"],
                "properties": {"webhooks": {"type": "array", "items": _ref("Webhook")}},
            }
        ),
        "WebhookDeleted": _answer(
            {
                "type": "object",
                "required": ["webhook_id", "deleted"],
                "properties": {
                    "webhook_id": {"type": "string"},
                    "deleted": {"type": "boolean", "const": True},
                },
            }
        ),
        "WebhookSecret": _answer(
            {
                "type": "object",
                "required": ["secret"],
                "properties": {
                    "secret": {
                        **secret,
                        "description": "Signs every delivery (`webhook-signature: v1,...`).",
                    },
                    "previous_secret": {
                        **secret,
                        "description": "After a rotation, until `previous_secret_expires_at`: signs too.",
                    },
                    "previous_secret_expires_at": {"type": "string", "pattern": WIRE_TIME},
                },
            }
        ),
        "WebhookSecretRotate": {
            "type": "object",
            "description": "Unknown fields are ignored.",
            "properties": {
                "overlap_seconds": {
                    "type": ["number", "null"],
                    "minimum": 0,
                    "maximum": MAX_OVERLAP_S,
                    "description": "How long the previous secret still signs; absent or null: the server's "
                    "default.",
                },
            },
        },
        "DeliveryAttempt": {
            "type": "object",
            "required": ["attempt", "time", "duration_ms", "status_code", "error"],
            "properties": {
                "attempt": {"type": "integer", "minimum": 1},
                "time": {"type": "string", "pattern": WIRE_TIME},
                "duration_ms": {"type": "integer", "minimum": 0},
                "status_code": {"type": ["integer", "null"], "description": "The endpoint's answer, if any."},
                "error": {"type": ["string", "null"], "description": "Why the try failed, if it did."},
            },
        },
        "Delivery": {
            "type": "object",
            "required": [
                "delivery_id",
                "event",
                "event_id",
                "event_time",
                "webhook_id",
                "url",
                "format",
                "status",
                "attempts",
                "attempt_log",
            ],
            "properties": {
                "delivery_id": {
                    "type": "string",
                    "description": "The `webhook-id` receivers see, on every try.",
                },
                "event": {"type": "string", "enum": events},
                "event_id": {"type": "integer", "description": "The event's id in `GET /api/v1/events`."},
                "event_time": {"type": "string", "pattern": WIRE_TIME},
                "webhook_id": {
                    "type": ["string", "null"],
                    "description": "null: the task's own `X-Videosynth-Callback-Url`.",
                },
                "url": {"type": "string"},
                "format": {"type": "string", "enum": formats},
                "status": {"type": "string", "enum": [s.value for s in DeliveryState]},
                "attempts": {"type": "integer", "minimum": 0},
                "attempt_log": {"type": "array", "items": _ref("DeliveryAttempt")},
                "next_attempt_time": {
                    "type": "string",
                    "pattern": WIRE_TIME,
                    "description": "`pending` only: when the next try goes out.",
                },
            },
        },
        "DeliveryAnswer": _answer(_ref("Delivery")),
        "DeliveryList": _answer(
            {
                "type": "object",
                "required": ["task_id", "deliveries"],
                "properties": {
                    "task_id": {"type": "string"},
                    "deliveries": {"type": "array", "items": _ref("Delivery")},
                },
            }
        ),
    }


def schemas(catalog: Catalog) -> Schema:
    models = [m.name for m in catalog]
    resolutions = sorted({r for m in catalog for r in m.resolutions}, key=sizes.tier)
    ratios = list(dict.fromkeys(r for m in catalog for r in m.ratios))
    statuses = [s.value for s in TaskStatus] + ["UNKNOWN"]
    min_duration = min(m.min_duration for m in catalog)
    max_duration = max(m.max_duration for m in catalog)
    max_refs = max(m.max_references for m in catalog)
    return {
        "Error": {
            "type": "object",
            "description": "A refused request. Failed tasks carry `code` and `message` inside `output` instead.",
            "required": ["request_id", "code", "message"],
            "properties": {
                "request_id": {"type": "string"},
                "code": {"type": "string", "examples": ["InvalidParameter"]},
                "message": {"type": "string"},
            },
        },
        "Media": {
            "type": "object",
            "required": ["type", "url"],
            "properties": {
                "type": {"type": "string", "enum": ["reference_image"]},
                "url": {
                    "type": "string",
                    "description": "`http(s)://` URL, `data:image/{jpeg,png,webp};base64,...`, or an `oss://` "
                    "key from the upload flow (with `X-DashScope-OssResourceResolve: enable`).",
                },
            },
        },
        "SubmitRequest": {
            "type": "object",
            "required": ["model", "input"],
            "description": "Unknown fields are ignored, as the hosted service does (the SDK adds some).",
            "properties": {
                "model": {"type": "string", "enum": models},
                "input": {
                    "type": "object",
                    "required": ["prompt", "media"],
                    "properties": {
                        "prompt": {
                            "type": "string",
                            "minLength": 1,
                            "description": "Names the references as `[Image 1]`...`[Image N]`, in the order of "
                            "`media`. Past 5000 characters (a Chinese character counts two) it is truncated.",
                        },
                        "media": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": max_refs,
                            "items": _ref("Media"),
                        },
                    },
                },
                "parameters": {
                    "type": "object",
                    "properties": {
                        "resolution": {"type": "string", "enum": resolutions},
                        "ratio": {"type": "string", "enum": ratios},
                        "duration": {"type": "integer", "minimum": min_duration, "maximum": max_duration},
                        "watermark": {"type": "boolean"},
                        "seed": {"type": "integer", "minimum": 0, "maximum": SEED_MAX},
                    },
                },
            },
        },
        "SubmitAnswer": {
            "type": "object",
            "required": ["request_id", "output"],
            "properties": {
                "request_id": {"type": "string"},
                "output": {
                    "type": "object",
                    "required": ["task_id", "task_status"],
                    "properties": {
                        "task_id": {"type": "string", "format": "uuid"},
                        "task_status": {"type": "string", "enum": ["PENDING"]},
                    },
                },
            },
        },
        "TaskOutput": {
            "type": "object",
            "required": ["task_id", "task_status"],
            "properties": {
                "task_id": {"type": "string"},
                "task_status": {"type": "string", "enum": statuses},
                "submit_time": {"type": "string", "pattern": WIRE_TIME},
                "scheduled_time": {"type": "string", "pattern": WIRE_TIME},
                "end_time": {"type": "string", "pattern": WIRE_TIME},
                "orig_prompt": {"type": "string"},
                "video_url": {"type": "string", "description": "SUCCEEDED only: the MP4, a signed link."},
                "code": {"type": "string", "description": "FAILED only."},
                "message": {"type": "string", "description": "FAILED only."},
                "progress": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": 100,
                    "description": "Extension: percent done, never decreasing, 100 only at SUCCEEDED.",
                },
                "stage": {
                    "type": "string",
                    "description": "Extension, PENDING and RUNNING only: `queued`, then what the worker is "
                    "doing (`fetching`, `generating`, `encoding`, `uploading`, ...).",
                },
                "queue_position": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Extension, PENDING only: tasks ahead of this one.",
                },
            },
        },
        "Usage": {
            "type": "object",
            "required": [
                "duration",
                "input_video_duration",
                "output_video_duration",
                "video_count",
                "SR",
                "ratio",
            ],
            "properties": {
                "duration": {"type": "integer"},
                "input_video_duration": {"type": "integer"},
                "output_video_duration": {"type": "number"},
                "video_count": {"type": "integer"},
                "SR": {"type": "integer", "examples": [720]},
                "ratio": {"type": "string"},
            },
        },
        "TaskAnswer": {
            "type": "object",
            "required": ["request_id", "output"],
            "properties": {
                "request_id": {"type": "string"},
                "output": _ref("TaskOutput"),
                "usage": {**_ref("Usage"), "description": "SUCCEEDED only."},
            },
        },
        "RequestIdOnly": {
            "type": "object",
            "required": ["request_id"],
            "properties": {"request_id": {"type": "string"}},
        },
        "TaskListEntry": {
            "type": "object",
            "required": ["task_id", "status", "model_name", "gmt_create", "request_id"],
            "properties": {
                "task_id": {"type": "string"},
                "status": {"type": "string", "enum": [s.value for s in TaskStatus]},
                "model_name": {"type": "string"},
                "gmt_create": {"type": "integer", "description": "Epoch milliseconds."},
                "start_time": {"type": "integer", "description": "Epoch milliseconds, once running."},
                "end_time": {"type": "integer", "description": "Epoch milliseconds, once finished."},
                "request_id": {"type": "string"},
                "api_key_id": {"type": "string"},
                "caller_parent_id": {"type": "string"},
                "caller_uid": {"type": "string"},
                "region": {"type": "string"},
                "user_api_unique_key": {"type": "string"},
            },
        },
        "TaskList": {
            "type": "object",
            "required": ["request_id", "total", "total_page", "page_no", "page_size", "data"],
            "properties": {
                "request_id": {"type": "string"},
                "total": {"type": "integer", "minimum": 0},
                "total_page": {"type": "integer", "minimum": 0},
                "page_no": {"type": "integer", "minimum": 1},
                "page_size": {"type": "integer", "minimum": 1},
                "data": {"type": "array", "items": _ref("TaskListEntry")},
            },
        },
        "UploadPolicy": {
            "type": "object",
            "required": ["request_id", "data"],
            "properties": {
                "request_id": {"type": "string"},
                "data": {
                    "type": "object",
                    "required": [
                        "policy",
                        "signature",
                        "upload_dir",
                        "upload_host",
                        "oss_access_key_id",
                        "x_oss_object_acl",
                        "x_oss_forbid_overwrite",
                    ],
                    "properties": {
                        "policy": {"type": "string"},
                        "signature": {"type": "string"},
                        "upload_dir": {"type": "string"},
                        "upload_host": {"type": "string", "description": f"This server's `{UPLOAD_PATH}`."},
                        "expire_in_seconds": {"type": "string"},
                        "max_file_size_mb": {"type": "string"},
                        "capacity_limit_mb": {"type": "string"},
                        "oss_access_key_id": {"type": "string"},
                        "x_oss_object_acl": {"type": "string"},
                        "x_oss_forbid_overwrite": {"type": "string"},
                    },
                },
            },
        },
        "Limits": {
            "type": "object",
            "description": "Extension: the effective per-client limits (0: off).",
            "required": ["submit_rps", "query_rps", "max_queued", "max_stored_mb"],
            "properties": {
                "submit_rps": {"type": "integer", "minimum": 0},
                "query_rps": {"type": "integer", "minimum": 0},
                "max_queued": {"type": "integer", "minimum": 0},
                "max_stored_mb": {"type": "integer", "minimum": 0},
            },
        },
        "Model": {
            "type": "object",
            "required": [
                "model",
                "engine",
                "task",
                "audio",
                "references",
                "durations",
                "fps",
                "defaults",
                "sizes",
            ],
            "properties": {
                "model": {"type": "string"},
                "engine": {"type": "string"},
                "audio": {
                    "type": "boolean",
                    "description": "Whether the model's videos have a soundtrack (AAC).",
                },
                "options": {"type": "object", "description": "The engine's options, secrets left out."},
                "description": {"type": "string"},
                "task": {"type": "string", "enum": ["reference-to-video"]},
                "references": {
                    "type": "object",
                    "required": ["min", "max"],
                    "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                },
                "durations": {"type": "array", "items": {"type": "integer"}},
                "fps": {"type": "integer"},
                "defaults": {
                    "type": "object",
                    "properties": {
                        "resolution": {"type": "string"},
                        "ratio": {"type": "string"},
                        "duration": {"type": "integer"},
                        "watermark": {"type": "boolean"},
                    },
                },
                "sizes": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["resolution", "ratio", "width", "height"],
                        "properties": {
                            "resolution": {"type": "string"},
                            "ratio": {"type": "string"},
                            "width": {"type": "integer"},
                            "height": {"type": "integer"},
                        },
                    },
                },
            },
        },
        "ModelList": {
            "type": "object",
            "required": ["request_id", "data", "limits"],
            "properties": {
                "request_id": {"type": "string"},
                "data": {"type": "array", "items": _ref("Model")},
                "limits": _ref("Limits"),
            },
        },
        **_webhook_schemas(),
    }


def _header(name: str, description: str, schema: Schema | None = None, required: bool = False) -> Schema:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _any_case(words: list[str]) -> str:
    """A pattern for any of ``words`` in any letter case, or nothing (JSON Schema patterns take no flags)."""
    alternatives = ("".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in w) for w in words)
    return f"^({'|'.join(alternatives)})?$"


def _path(name: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _path_task_id() -> Schema:
    return _path("task_id")


def _event_stream_description() -> str:
    names = " | ".join(f"task.{k.value}" for k in EventKind)
    return (
        "Server-Sent Events of the account's task status changes, oldest first, until the client leaves, "
        "the key is revoked or the server stops. The stream opens with a comment and the reconnect delay:\n\n"
        f"```\n: videosynth events for this account\nretry: {STREAM_RETRY_MS}\n\n```\n\n"
        "then one frame per event:\n\n"
        f"```\nid: <seq>\nevent: {names}\ndata: <JSON>\n\n```\n\n"
        "`data` is the `GET /api/v1/tasks/{task_id}` answer (`TaskAnswer`) for the task as the change left it, "
        "on one line; its `request_id` is the submit's. An idle stream sends the comment `: keepalive` every "
        f"{STREAM_KEEPALIVE_S:g} s. Without an event id the stream starts with the next event; with one, after "
        "that event (EventSource sends `Last-Event-ID` by itself when it reconnects)."
    )


def _webhook_paths(secured: list[Schema]) -> Schema:
    store = _store_errors()
    return {
        "/api/v1/webhooks": {
            "post": {
                "tags": [TAG],
                "operationId": "createWebhook",
                "summary": "Extension: add an endpoint that is POSTed the account's task events",
                "description": "Deliveries are signed as Standard Webhooks (`webhook-id`, `webhook-timestamp`, "
                "`webhook-signature`, see `GET /api/v1/webhooks/secret`) and retried on a schedule until the "
                f"endpoint answers 2xx. An account has at most {MAX_WEBHOOKS_PER_ACCOUNT} webhooks.",
                "security": secured,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("WebhookCreate")}},
                },
                "responses": {
                    "200": _ok("The webhook.", _ref("WebhookAnswer")),
                    **_hook_body_errors(
                        "a field is missing or invalid (a URL that cannot be used, an event the format does not "
                        f"tell, `include_result` outside `{DASHSCOPE_EVENT}`), or the account has "
                        f"{MAX_WEBHOOKS_PER_ACCOUNT} webhooks already"
                    ),
                    **_auth_errors(),
                    **store,
                },
            },
            "get": {
                "tags": [TAG],
                "operationId": "listWebhooks",
                "summary": "Extension: the account's webhooks",
                "security": secured,
                "responses": {
                    "200": _ok("The webhooks, oldest first.", _ref("WebhookList")),
                    **_auth_errors(),
                    **store,
                },
            },
        },
        "/api/v1/webhooks/{webhook_id}": {
            "delete": {
                "tags": [TAG],
                "operationId": "deleteWebhook",
                "summary": "Extension: remove a webhook",
                "description": "Its deliveries that have not gone out yet are dropped.",
                "security": secured,
                "parameters": [_path("webhook_id")],
                "responses": {
                    "200": _ok("Removed.", _ref("WebhookDeleted")),
                    **_auth_errors(),
                    "404": _error("No such webhook in this account: `NotFound`."),
                    **store,
                },
            }
        },
        "/api/v1/webhooks/secret": {
            "get": {
                "tags": [TAG],
                "operationId": "getWebhookSecret",
                "summary": "Extension: the account's webhook signing secret",
                "description": "Made on first use.",
                "security": secured,
                "responses": {
                    "200": _ok(
                        "The secret, and during a rotation's overlap the previous one.", _ref("WebhookSecret")
                    ),
                    **_auth_errors(),
                    **store,
                },
            }
        },
        "/api/v1/webhooks/secret/rotate": {
            "post": {
                "tags": [TAG],
                "operationId": "rotateWebhookSecret",
                "summary": "Extension: replace the webhook signing secret",
                "description": "Both secrets sign deliveries during the overlap, so receivers can switch "
                "without losing one.",
                "security": secured,
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": _ref("WebhookSecretRotate")}},
                },
                "responses": {
                    "200": _ok("The new secret and the previous one.", _ref("WebhookSecret")),
                    **_hook_body_errors(f"`overlap_seconds` is not a number from 0 to {MAX_OVERLAP_S}"),
                    **_auth_errors(),
                    **store,
                },
            }
        },
        "/api/v1/tasks/{task_id}/deliveries": {
            "get": {
                "tags": [TAG],
                "operationId": "listTaskDeliveries",
                "summary": "Extension: a task's webhook deliveries and their tries",
                "security": secured,
                "parameters": [_path_task_id()],
                "responses": {
                    "200": _ok("The deliveries, in event order.", _ref("DeliveryList")),
                    **_auth_errors(),
                    "404": _error("No such task in this account: `NotFound`."),
                    **store,
                },
            }
        },
        "/api/v1/tasks/{task_id}/deliveries/{delivery_id}/redeliver": {
            "post": {
                "tags": [TAG],
                "operationId": "redeliverTaskDelivery",
                "summary": "Extension: send a delivery again now",
                "description": "Also after it failed every try; the endpoint sees the same `webhook-id`.",
                "security": secured,
                "parameters": [_path_task_id(), _path("delivery_id")],
                "responses": {
                    "200": _ok("The delivery, pending again.", _ref("DeliveryAnswer")),
                    **_auth_errors(),
                    "404": _error(
                        "No such delivery of this account's task, or its webhook was removed: `NotFound`."
                    ),
                    **store,
                },
            }
        },
        "/api/v1/events": {
            "get": {
                "tags": [TAG],
                "operationId": "streamEvents",
                "summary": "Extension: the account's task events as a Server-Sent Events stream",
                "description": _event_stream_description(),
                "security": secured,
                "parameters": [
                    _header(
                        "Last-Event-ID",
                        "Resume after this event id (a number the stream sent); empty: from now.",
                        {"type": "string", "pattern": EVENT_ID},
                    ),
                    {
                        "name": "last_event_id",
                        "in": "query",
                        "description": "The same, for a first connect that resumes (EventSource cannot set "
                        "headers); the header wins.",
                        "schema": {"type": "string", "pattern": EVENT_ID},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The stream (it does not end by itself).",
                        "headers": {
                            "x-request-id": {"$ref": "#/components/headers/RequestId"},
                            "Cache-Control": {"schema": {"type": "string", "enum": ["no-cache"]}},
                        },
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "400": _error("The event id is not a number: `InvalidParameter`."),
                    **_auth_errors(),
                    **store,
                },
            }
        },
    }


def paths() -> Schema:
    secured: list[Schema] = [{"bearer": []}]
    task_errors = {**_auth_errors(), **_throttled("Past the key's query rate: `Throttling.RateQuota`.")}
    return {
        SUBMIT_PATH: {
            "post": {
                "tags": [TAG],
                "operationId": "submitVideoSynthesis",
                "summary": "Submit a reference-to-video task",
                "description": "Answers at once with the task id; poll `GET /api/v1/tasks/{task_id}`. "
                "Checks that need the images (download, decoding, size) come later and end as a FAILED task.",
                "security": secured,
                "parameters": [
                    _header(
                        "X-DashScope-Async",
                        "Must be `enable`; without it: 403 `AccessDenied`.",
                        {"type": "string", "enum": ["enable"]},
                        required=True,
                    ),
                    _header(
                        "X-DashScope-OssResourceResolve",
                        "`enable` resolves `oss://` references from the upload flow.",
                        {"type": "string", "enum": ["enable"]},
                    ),
                    _header(
                        "Idempotency-Key",
                        "Extension: the same key and body within 24 h answer with the first task; another body "
                        "409.",
                        {"type": "string", "pattern": r"^[\x21-\x7e]{1,255}$"},
                    ),
                    _header(
                        "x-dashscope-sdk-session-id",
                        "Sent by the SDK; its own retry of a submit whose answer was lost gets the first task.",
                    ),
                    _header(
                        "X-Videosynth-Callback-Url",
                        "Extension: an http or https URL that is POSTed this task's events (all of them, "
                        f"`{STANDARD}` bodies, signed like the account's webhooks), besides the account's "
                        "webhooks. A URL that cannot be used: 400 `InvalidParameter`.",
                        {"type": "string", "maxLength": MAX_DELIVERY_URL, "pattern": HTTP_URL},
                    ),
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("SubmitRequest")}},
                },
                "responses": {
                    "200": _ok(
                        "The task was created (or, for a replayed Idempotency-Key, found).",
                        _ref("SubmitAnswer"),
                        {
                            "Idempotent-Replayed": {
                                "description": "`true` when the answer is an earlier submit's.",
                                "schema": {"type": "string", "enum": ["true"]},
                            }
                        },
                    ),
                    "400": _error(
                        "Refused, no task created (a body that is not JSON, a field missing or out of range, an "
                        f"unknown model, a reference that cannot be used): {_codes(400)}."
                    ),
                    **_auth_errors(),
                    "403": _error("`X-DashScope-Async: enable` missing: `AccessDenied`."),
                    "409": _error(
                        "The Idempotency-Key was used with another body: `InvalidParameter.IdempotencyKey`."
                    ),
                    "413": _error("The body is over 256 MB: `InvalidParameter`."),
                    **_throttled(
                        "Past the key's submit rate (`Throttling.RateQuota`), queued tasks or stored bytes "
                        "(`Throttling.AllocationQuota`)."
                    ),
                    **_store_errors(),
                },
            }
        },
        "/api/v1/tasks/{task_id}": {
            "get": {
                "tags": [TAG],
                "operationId": "getTask",
                "summary": "A task's status and, once SUCCEEDED, its video",
                "description": "An id that is unknown, expired or another account's answers 200 with "
                "`task_status: UNKNOWN`.",
                "security": secured,
                "parameters": [_path_task_id()],
                "responses": {
                    "200": _ok("The task.", _ref("TaskAnswer")),
                    **task_errors,
                    **_store_errors(),
                },
            }
        },
        "/api/v1/tasks/{task_id}/cancel": {
            "post": {
                "tags": [TAG],
                "operationId": "cancelTask",
                "summary": "Cancel a task",
                "description": "A PENDING task is CANCELED at once; a RUNNING one (extension) is stopped by its "
                "worker within about a second.",
                "security": secured,
                "parameters": [_path_task_id()],
                "responses": {
                    "200": _ok("Canceled, or being stopped.", _ref("RequestIdOnly")),
                    "400": _error(
                        "Finished already, or not this account's: `UnsupportedOperation`.",
                    ),
                    **_auth_errors(),
                    **_store_errors(),
                },
            }
        },
        "/api/v1/tasks": {
            "get": {
                "tags": [TAG],
                "operationId": "listTasks",
                "summary": "The account's tasks, newest first",
                "security": secured,
                "parameters": [
                    {"name": "task_id", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "start_time",
                        "in": "query",
                        "description": "`YYYYMMDDhhmmss` in the server's zone; the window is 24 h at most.",
                        "schema": {"type": "string", "pattern": r"^(\d{14})?$"},
                    },
                    {
                        "name": "end_time",
                        "in": "query",
                        "description": "`YYYYMMDDhhmmss`; without either: the last 24 h.",
                        "schema": {"type": "string", "pattern": r"^(\d{14})?$"},
                    },
                    {"name": "model_name", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "status",
                        "in": "query",
                        "description": "A status, in any letter case; `UNKNOWN` lists nothing; empty: any.",
                        "schema": {
                            "type": "string",
                            "pattern": _any_case([s.value for s in TaskStatus] + ["UNKNOWN"]),
                        },
                    },
                    {"name": "api_key_id", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "page_no",
                        "in": "query",
                        "description": "A positive integer; default (or empty) 1.",
                        "schema": {"type": "string", "pattern": PAGE_NUMBER},
                    },
                    {
                        "name": "page_size",
                        "in": "query",
                        "description": f"A positive integer; default (or empty) 10; at most {MAX_PAGE_SIZE} listed.",
                        "schema": {"type": "string", "pattern": PAGE_NUMBER},
                    },
                ],
                "responses": {
                    "200": _ok("One page.", _ref("TaskList")),
                    "400": _error("A parameter is malformed: `InvalidParameter`."),
                    **task_errors,
                    **_store_errors(),
                },
            }
        },
        "/api/v1/uploads": {
            "get": {
                "tags": [TAG],
                "operationId": "getUploadPolicy",
                "summary": "A signed policy for uploading a local file (the SDK's temporary upload flow)",
                "description": f"POST the file as a multipart form to `upload_host` (`{UPLOAD_PATH}`), then submit "
                "`oss://{upload_dir}/{file name}` with `X-DashScope-OssResourceResolve: enable`.",
                "security": secured,
                "parameters": [
                    {
                        "name": "action",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string", "enum": ["getPolicy"]},
                    },
                    {"name": "model", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": _ok("The policy.", _ref("UploadPolicy")),
                    "400": _error("`action` is not `getPolicy`: `InvalidParameter`."),
                    **_auth_errors(),
                    **_throttled("Past the account's stored bytes: `Throttling.AllocationQuota`."),
                    **_store_errors(),
                },
            }
        },
        UPLOAD_PATH: {
            "post": {
                "tags": [TAG],
                "operationId": "uploadFile",
                "summary": "Upload one file under a policy (no Bearer key: the signed policy is the credential)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["OSSAccessKeyId", "Signature", "policy", "key", "file"],
                                "properties": {
                                    "OSSAccessKeyId": {"type": "string"},
                                    "Signature": {"type": "string"},
                                    "policy": {"type": "string"},
                                    "key": {"type": "string"},
                                    "x-oss-object-acl": {"type": "string"},
                                    "x-oss-forbid-overwrite": {"type": "string"},
                                    "success_action_status": {"type": "string"},
                                    "x-oss-content-type": {"type": "string"},
                                    "file": {"type": "string", "format": "binary"},
                                },
                            },
                            "encoding": {"file": {"contentType": "application/octet-stream"}},
                        }
                    },
                },
                "responses": {
                    "200": {"description": "Stored (an empty body, as OSS answers)."},
                    "400": _error(
                        "A malformed form, a key outside the policy's directory, or an existing key."
                    ),
                    "403": _error("The policy's signature does not match, or it expired: `AccessDenied`."),
                    "413": _error("The file is larger than the policy allows."),
                    **_store_errors(),
                },
            }
        },
        "/api/v1/models": {
            "get": {
                "tags": [TAG],
                "operationId": "listModels",
                "summary": "Extension: the models this server serves, their sizes, and the caller's limits",
                "description": "Open without a key (the server's default limits); with one, that key's limits.",
                "security": [{}, {"bearer": []}],
                "responses": {
                    "200": _ok("The model table.", _ref("ModelList")),
                    **_auth_errors(),
                },
            }
        },
        **_webhook_paths(secured),
    }


def document(catalog: Catalog, *, title: str, version: str) -> Schema:
    """The whole OpenAPI 3.1 document of this dialect."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "DashScope's asynchronous video-synthesis API (the HappyHorse reference-to-video "
            "contract), as served by videosynth. Extensions are marked as such; clients that do not know them "
            "ignore them.",
        },
        "paths": paths(),
        "components": {
            "schemas": schemas(catalog),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer <key>`"}
            },
            "headers": {
                "RequestId": {"description": "The answer's `request_id`.", "schema": {"type": "string"}},
                "ShouldRetry": {
                    "description": "`false` on refusals that a retry would meet again (SDK v2 reads it).",
                    "schema": {"type": "string", "enum": ["false"]},
                },
                "RetryAfter": {
                    "description": "Seconds to wait before trying again.",
                    "required": True,
                    "schema": {"type": "string", "pattern": r"^\d+$"},
                },
            },
        },
        "tags": [
            {
                "name": TAG,
                "description": "Submit, poll, cancel and list tasks; upload local files; webhooks and the event "
                "stream (extensions).",
            }
        ],
    }
