"""Push instead of poll, in this dialect's shape (extensions: the hosted service configures its events per
account in its console): ``/api/v1/webhooks``, the signing secret, a task's deliveries, and the account's
event stream ``GET /api/v1/events`` (Server-Sent Events, resumable with ``Last-Event-ID``)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from videosynth.api.bodies import read_capped
from videosynth.api.dashscope.errors import BODY_INVALID, WireRefusal, json_response, request_id
from videosynth.api.dashscope.events import DASHSCOPE_EVENT, FORMATS, STANDARD, sse_frame
from videosynth.api.dashscope.responses import wire_time
from videosynth.api.hooks import parse_event_kinds
from videosynth.api.services import Services
from videosynth.errors import InvalidRequest, VideosynthError
from videosynth.tasks.models import Delivery, Webhook, WebhookSecrets

Endpoint = Callable[[Request], Awaitable[Response]]
MAX_HOOK_BODY = 16 * 1024
#: How often an idle stream looks for new events, and sends a comment so proxies keep it open.
STREAM_POLL_S = 0.5
STREAM_KEEPALIVE_S = 15.0
STREAM_BATCH = 100
#: Seconds a client's EventSource waits before it reconnects (the stream's ``retry:`` field).
STREAM_RETRY_MS = 2000
MAX_OVERLAP_S = 7 * 24 * 3600


def webhook_json(hook: Webhook, services: Services) -> dict[str, Any]:
    return {
        "webhook_id": hook.webhook_id,
        "url": hook.url,
        "events": list(hook.events),
        "format": hook.format,
        "include_result": hook.include_result,
        "created_at": wire_time(hook.created_ms, services.settings.tz),
    }


def secrets_json(secrets: WebhookSecrets, services: Services) -> dict[str, Any]:
    out: dict[str, Any] = {"secret": secrets.current}
    if secrets.previous and secrets.previous_until_ms and secrets.previous_until_ms > int(time.time() * 1000):
        out["previous_secret"] = secrets.previous
        out["previous_secret_expires_at"] = wire_time(secrets.previous_until_ms, services.settings.tz)
    return out


def delivery_json(d: Delivery, services: Services) -> dict[str, Any]:
    tz = services.settings.tz
    out: dict[str, Any] = {
        "delivery_id": d.delivery_id,
        "event": d.event.kind.value,
        "event_id": d.event.seq,
        "event_time": wire_time(d.event.created_ms, tz),
        "webhook_id": d.webhook_id,
        "url": d.url,
        "format": d.format,
        "status": d.state.value,
        "attempts": d.attempts,
        "attempt_log": [
            {
                "attempt": a.attempt,
                "time": wire_time(a.started_ms, tz),
                "duration_ms": a.duration_ms,
                "status_code": a.status_code,
                "error": a.error,
            }
            for a in d.history
        ],
    }
    if d.next_attempt_ms is not None:
        out["next_attempt_time"] = wire_time(d.next_attempt_ms, tz)
    return out


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await read_capped(request, MAX_HOOK_BODY, "The request body is too large.")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise WireRefusal(BODY_INVALID.status, BODY_INVALID.code, BODY_INVALID.message) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def parse_last_event_id(text: str | None) -> int | None:
    if text is None or text.strip() == "":
        return None
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise InvalidRequest("Last-Event-ID must be the id of an event this stream sent (a number).")
    return int(text)


def hook_routes(services: Services, route: Callable[..., Callable[[Endpoint], Endpoint]]) -> None:
    auth, hooks, store = services.auth, services.hooks, services.store

    @route("POST", "/api/v1/webhooks")
    async def add_webhook(request: Request) -> Response:
        key = await auth.authenticate(request.headers.get("authorization"))
        body = await _json_object(request)
        fmt = body.get("format", STANDARD)
        if not isinstance(fmt, str) or fmt not in FORMATS:
            raise InvalidRequest(f"format must be one of: {', '.join(FORMATS)}.")
        allowed = FORMATS[fmt]
        events = parse_event_kinds(body["events"], allowed) if "events" in body else allowed
        include_result = body.get("include_result", True)
        if not isinstance(include_result, bool):
            raise InvalidRequest("include_result must be true or false.")
        if include_result is False and fmt != DASHSCOPE_EVENT:
            raise InvalidRequest("include_result applies to the dashscope-event format only.")
        hook = await hooks.add(key, body.get("url"), events, fmt, include_result)  # type: ignore[arg-type]
        return json_response(request, {"output": webhook_json(hook, services)})

    @route("GET", "/api/v1/webhooks")
    async def list_webhooks(request: Request) -> Response:
        key = await auth.authenticate(request.headers.get("authorization"))
        found = await hooks.webhooks(key)
        return json_response(request, {"output": {"webhooks": [webhook_json(h, services) for h in found]}})

    @route("DELETE", "/api/v1/webhooks/{webhook_id}")
    async def remove_webhook(request: Request) -> Response:
        key = await auth.authenticate(request.headers.get("authorization"))
        webhook_id: str = request.path_params["webhook_id"]
        await hooks.remove(key, webhook_id)
        return json_response(request, {"output": {"webhook_id": webhook_id, "deleted": True}})

    @route("GET", "/api/v1/webhooks/secret")
    async def get_secret(request: Request) -> Response:
        key = await auth.authenticate(request.headers.get("authorization"))
        return json_response(request, {"output": secrets_json(await hooks.secrets(key), services)})

    @route("POST", "/api/v1/webhooks/secret/rotate")
    async def rotate_secret(request: Request) -> Response:
        key = await auth.authenticate(request.headers.get("authorization"))
        body = await _json_object(request)
        overlap = body.get("overlap_seconds")
        if overlap is not None and (
            isinstance(overlap, bool)
            or not isinstance(overlap, int | float)
            or not 0 <= overlap <= MAX_OVERLAP_S
        ):
            raise InvalidRequest(f"overlap_seconds must be a number from 0 to {MAX_OVERLAP_S}.")
        secrets = await hooks.rotate(key, None if overlap is None else float(overlap))
        return json_response(request, {"output": secrets_json(secrets, services)})

    @route("GET", "/api/v1/tasks/{task_id}/deliveries")
    async def task_deliveries(request: Request) -> Response:
        key = await auth.authenticate(request.headers.get("authorization"))
        task_id: str = request.path_params["task_id"]
        found = await hooks.deliveries(key, task_id)
        return json_response(
            request,
            {"output": {"task_id": task_id, "deliveries": [delivery_json(d, services) for d in found]}},
        )

    @route("POST", "/api/v1/tasks/{task_id}/deliveries/{delivery_id}/redeliver")
    async def redeliver(request: Request) -> Response:
        key = await auth.authenticate(request.headers.get("authorization"))
        again = await hooks.redeliver(key, request.path_params["task_id"], request.path_params["delivery_id"])
        return json_response(request, {"output": delivery_json(again, services)})

    @route("GET", "/api/v1/events")
    async def events(request: Request) -> Response:
        authorization = request.headers.get("authorization")
        key = await auth.authenticate(authorization)
        # EventSource sends Last-Event-ID itself when it reconnects; the query form is for a first connect
        # that resumes (EventSource cannot set headers).
        after = parse_last_event_id(
            request.headers.get("last-event-id") or request.query_params.get("last_event_id")
        )
        if after is None:
            after = await run_in_threadpool(store.last_event_seq, key.account_id)
        start = after

        async def stream() -> AsyncIterator[bytes]:
            last = start
            yield f": videosynth events for this account\nretry: {STREAM_RETRY_MS}\n\n".encode()
            quiet_since = time.monotonic()
            while not services.stopping.is_set() and not await request.is_disconnected():
                try:
                    # A revoked key ends its streams within the key cache's second.
                    await auth.authenticate(authorization)
                    batch = await run_in_threadpool(store.events_after, key.account_id, last, STREAM_BATCH)
                except VideosynthError:
                    return  # the client reconnects with the last id it saw
                for event in batch:
                    yield sse_frame(event, services.settings.tz, services.result_link)
                    last = event.seq
                if batch:
                    quiet_since = time.monotonic()
                    if len(batch) == STREAM_BATCH:
                        continue
                elif time.monotonic() - quiet_since >= STREAM_KEEPALIVE_S:
                    yield b": keepalive\n\n"
                    quiet_since = time.monotonic()
                await asyncio.sleep(STREAM_POLL_S)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={
                "cache-control": "no-cache",
                "x-accel-buffering": "no",
                "x-request-id": request_id(request),
            },
        )
