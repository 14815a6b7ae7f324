"""The OpenAPI description of the OpenAI-style dialect (``/v1/videos``), written by hand as the DashScope
dialect's is, and merged with it into one document (``api.app.openapi_document``). Its component names all
start with ``OpenAI`` so that the two never collide. Held to the server by tests/test_openapi.py.
"""

from __future__ import annotations

from typing import Any

from videosynth.api.openai.errors import ERRORS
from videosynth.api.openai.requests import DEFAULT_PAGE, MAX_PAGE, MAX_PROMPT_CHARS, size_names
from videosynth.api.openai.responses import STATUS
from videosynth.api.openai.routes import VARIANTS, VIDEOS_PATH
from videosynth.catalog import Catalog

Schema = dict[str, Any]
TAG = "OpenAI-style videos"
#: The references a JSON body may carry as URLs: http(s), or a base64 data URL of a JPEG, PNG or WEBP.
URL_PATTERN = (
    r"^(?:[hH][tT][tT][pP][sS]?://|[dD][aA][tT][aA]:[iI][mM][aA][gG][eE]/"
    r"(?:[jJ][pP][eE]?[gG]|[pP][nN][gG]|[wW][eE][bB][pP]);[bB][aA][sS][eE]64,)"
)


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _codes(*statuses: int) -> str:
    codes = sorted({e.code for e in ERRORS.values() if e.status in statuses and e.code})
    return ", ".join(f"`{c}`" for c in codes)


def _error(description: str, *, retry_after: bool = False, should_retry: bool = True) -> Schema:
    headers: Schema = {"x-request-id": {"$ref": "#/components/headers/OpenAIRequestId"}}
    if should_retry:
        headers["x-should-retry"] = {"$ref": "#/components/headers/OpenAIShouldRetry"}
    if retry_after:
        headers["Retry-After"] = {"$ref": "#/components/headers/OpenAIRetryAfter"}
    return {
        "description": description,
        "headers": headers,
        "content": {"application/json": {"schema": _ref("OpenAIError")}},
    }


def _ok(description: str, schema: Schema) -> Schema:
    return {
        "description": description,
        "headers": {"x-request-id": {"$ref": "#/components/headers/OpenAIRequestId"}},
        "content": {"application/json": {"schema": schema}},
    }


def _common(*, not_found: bool = True) -> Schema:
    responses: Schema = {
        "401": _error("No key, or a key that is not valid or was revoked (`AuthenticationError`)."),
        "429": _error(
            "Past the key's query rate: `rate_limit_exceeded` (`RateLimitError`).",
            retry_after=True,
            should_retry=False,
        ),
        "503": _error("The task store cannot be reached (retry later).", should_retry=False),
    }
    if not_found:
        responses["404"] = _error(
            "No video of this account has this id (never created, deleted, expired, or another account's)."
        )
    return responses


def _nullable(schema: Schema) -> Schema:
    return {**schema, "type": [schema["type"], "null"]}


def schemas(catalog: Catalog) -> Schema:
    models = [m.name for m in catalog]
    all_sizes = list(dict.fromkeys(s for m in catalog for s in size_names(m)))
    min_s = min(m.min_duration for m in catalog)
    max_s = max(m.max_duration for m in catalog)
    max_refs = max(m.max_references for m in catalog)
    reference: Schema = {
        "oneOf": [
            {"type": "string", "pattern": URL_PATTERN},
            {
                "type": "object",
                "required": ["image_url"],
                "properties": {"image_url": {"type": "string", "pattern": URL_PATTERN}},
            },
        ]
    }
    create_fields: Schema = {
        "prompt": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_PROMPT_CHARS,
            "description": "May name the references as `[Image 1]`...`[Image N]`, in the order sent; without "
            "any, every reference is used, in order.",
        },
        "model": {"type": "string", "enum": models, "description": "Absent: this server's first model."},
        "size": {
            "type": "string",
            "enum": all_sizes,
            "description": "`WIDTHxHEIGHT`: a size of the table as is, or one of OpenAI's (`720x1280`, "
            "`1280x720`, `1024x1792`, `1792x1024`), mapped to the nearest ratio and tier. Absent: the "
            "model's default.",
        },
    }
    seconds_text = {"type": "string", "enum": [str(n) for n in range(min_s, max_s + 1)]}
    return {
        "OpenAIError": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type", "param", "code"],
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string", "examples": ["invalid_request_error"]},
                        "param": {"type": ["string", "null"]},
                        "code": {"type": ["string", "null"]},
                    },
                }
            },
        },
        "OpenAIVideoCreateJson": {
            "type": "object",
            "required": ["prompt", "input_reference"],
            "properties": {
                **create_fields,
                "seconds": {
                    "oneOf": [seconds_text, {"type": "integer", "minimum": min_s, "maximum": max_s}],
                    "description": "Absent: the model's default.",
                },
                "input_reference": {
                    "description": "One reference (an `image_url` object or a URL string) or a list of them.",
                    "oneOf": [
                        reference,
                        {"type": "array", "minItems": 1, "maxItems": max_refs, "items": reference},
                    ],
                },
            },
        },
        "OpenAIVideoCreateForm": {
            "type": "object",
            "required": ["prompt", "input_reference"],
            "properties": {
                **create_fields,
                "seconds": {**seconds_text, "description": "Absent: the model's default."},
                "input_reference": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": max_refs,
                    "description": "JPEG, PNG or WEBP files of at most 20 MB, one part each, in order (the SDK "
                    "names the parts of a list `input_reference[]`; both names are read).",
                    "items": {"type": "string", "format": "binary"},
                },
            },
        },
        "OpenAIVideoError": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "`canceled` for a canceled video."},
                "message": {"type": "string"},
            },
        },
        "OpenAIVideo": {
            "type": "object",
            "required": ["id", "object", "created_at", "model", "progress", "seconds", "size", "status"],
            "properties": {
                "id": {"type": "string", "description": "The task's id, the same in both dialects."},
                "object": {"type": "string", "enum": ["video"]},
                "created_at": {"type": "integer", "description": "Unix seconds."},
                "completed_at": _nullable(
                    {"type": "integer", "description": "Unix seconds, once finished (any way)."}
                ),
                "expires_at": _nullable(
                    {"type": "integer", "description": "Unix seconds, once completed: when it is purged."}
                ),
                "model": {"type": "string"},
                "progress": {"type": "integer", "minimum": 0, "maximum": 100},
                "prompt": _nullable({"type": "string"}),
                "remixed_from_video_id": {"type": "null"},
                "seconds": {"type": "string"},
                "size": {"type": "string", "pattern": r"^\d+x\d+$"},
                "status": {"type": "string", "enum": list(dict.fromkeys(STATUS.values()))},
                "error": {"oneOf": [{"type": "null"}, _ref("OpenAIVideoError")]},
            },
        },
        "OpenAIVideoList": {
            "type": "object",
            "required": ["object", "data", "first_id", "last_id", "has_more"],
            "properties": {
                "object": {"type": "string", "enum": ["list"]},
                "data": {"type": "array", "items": _ref("OpenAIVideo")},
                "first_id": {"type": ["string", "null"]},
                "last_id": {"type": ["string", "null"]},
                "has_more": {"type": "boolean"},
            },
        },
        "OpenAIVideoDeleted": {
            "type": "object",
            "required": ["id", "object", "deleted"],
            "properties": {
                "id": {"type": "string"},
                "object": {"type": "string", "enum": ["video.deleted"]},
                "deleted": {"type": "boolean", "enum": [True]},
            },
        },
    }


def _video_id() -> Schema:
    return {"name": "video_id", "in": "path", "required": True, "schema": {"type": "string"}}


def paths() -> Schema:
    secured: list[Schema] = [{"bearer": []}]
    one = f"{VIDEOS_PATH}/{{video_id}}"
    return {
        VIDEOS_PATH: {
            "post": {
                "tags": [TAG],
                "operationId": "createVideo",
                "summary": "Create a video from a prompt and reference images",
                "description": "Answers at once with the queued video; poll `GET /v1/videos/{video_id}`. "
                "Checks that need a URL's image (download, decoding) come later and end as a failed video.",
                "security": secured,
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "The same key and request within 24 h answer with the first video; "
                        "another request 409.",
                        "schema": {"type": "string", "pattern": r"^[\x21-\x7e]{1,255}$"},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": _ref("OpenAIVideoCreateForm"),
                            "encoding": {
                                "input_reference": {"contentType": "image/png, image/jpeg, image/webp"}
                            },
                        },
                        "application/json": {"schema": _ref("OpenAIVideoCreateJson")},
                    },
                },
                "responses": {
                    "200": _ok(
                        "The video, queued (or, for a replayed Idempotency-Key, as it is now).",
                        _ref("OpenAIVideo"),
                    ),
                    "400": _error(
                        f"Refused, no video created: {_codes(400)}, `invalid_size`, `invalid_seconds`."
                    ),
                    "409": _error(
                        "The Idempotency-Key was used with another request: `idempotency_key_reused`."
                    ),
                    "413": _error("The body is over 256 MB: `payload_too_large`."),
                    **_common(not_found=False),
                    "429": _error(
                        "Past the key's submit rate or queued videos (`rate_limit_exceeded`), or its stored "
                        "bytes (`storage_quota_exceeded`).",
                        retry_after=True,
                        should_retry=False,
                    ),
                },
            },
            "get": {
                "tags": [TAG],
                "operationId": "listVideos",
                "summary": "The account's videos, by creation time, with a cursor",
                "security": secured,
                "parameters": [
                    {
                        "name": "after",
                        "in": "query",
                        "description": "The id of the last video of the previous page (`last_id`).",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "description": f"Videos per page; default {DEFAULT_PAGE}.",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                    },
                    {
                        "name": "order",
                        "in": "query",
                        "description": "`desc` (newest first, the default) or `asc`.",
                        "schema": {"type": "string", "enum": ["asc", "desc"]},
                    },
                ],
                "responses": {
                    "200": _ok("One page.", _ref("OpenAIVideoList")),
                    "400": _error("A parameter is malformed, or `after` names no video of this account."),
                    **_common(not_found=False),
                },
            },
        },
        one: {
            "get": {
                "tags": [TAG],
                "operationId": "retrieveVideo",
                "summary": "A video's status, progress and error",
                "description": "Any task of the account, whichever dialect created it.",
                "security": secured,
                "parameters": [_video_id()],
                "responses": {"200": _ok("The video.", _ref("OpenAIVideo")), **_common()},
            },
            "delete": {
                "tags": [TAG],
                "operationId": "deleteVideo",
                "summary": "Delete a video (canceling it first if it is queued or in progress)",
                "description": "The task and its stored video go; afterwards this id answers 404 here and "
                "`UNKNOWN` in the DashScope dialect.",
                "security": secured,
                "parameters": [_video_id()],
                "responses": {"200": _ok("Deleted.", _ref("OpenAIVideoDeleted")), **_common()},
            },
        },
        f"{one}/content": {
            "get": {
                "tags": [TAG],
                "operationId": "downloadVideoContent",
                "summary": "The completed video's MP4, or a JPEG of its first frame",
                "security": secured,
                "parameters": [
                    _video_id(),
                    {
                        "name": "variant",
                        "in": "query",
                        "description": "`video` (default) or `thumbnail`.",
                        "schema": {"type": "string", "enum": list(VARIANTS)},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The MP4 (`video`) or a JPEG of its first frame (`thumbnail`).",
                        "content": {
                            "video/mp4": {"schema": {"type": "string", "format": "binary"}},
                            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    "302": {
                        "description": "Object storage only: the video's signed link (the SDK follows it).",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    "400": _error("Another variant (`spritesheet` is not made here)."),
                    **_common(),
                },
            }
        },
    }


def components(catalog: Catalog) -> Schema:
    return {
        "schemas": schemas(catalog),
        "headers": {
            "OpenAIRequestId": {"description": "This request's id.", "schema": {"type": "string"}},
            "OpenAIShouldRetry": {
                "description": "`false` on refusals that a retry would meet again (the SDK reads it).",
                "schema": {"type": "string", "enum": ["false"]},
            },
            "OpenAIRetryAfter": {
                "description": "Seconds to wait before trying again.",
                "required": True,
                "schema": {"type": "string", "pattern": r"^\d+$"},
            },
        },
    }


def document(catalog: Catalog) -> Schema:
    """This dialect's paths, components and tag, to merge into the server's document."""
    return {
        "paths": paths(),
        "components": components(catalog),
        "tags": [
            {
                "name": TAG,
                "description": "The OpenAI-style Videos API over the same tasks: a video's id is its task's id "
                "in either dialect.",
            }
        ],
    }
