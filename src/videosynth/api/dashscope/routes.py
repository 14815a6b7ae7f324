"""The DashScope endpoints: submit, query, cancel, list, the SDK's upload flow, and the model list."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from videosynth import uploads
from videosynth.api.bodies import read_capped
from videosynth.api.dashscope import requests as wire_requests
from videosynth.api.dashscope import responses
from videosynth.api.dashscope.errors import (
    ASYNC_REQUIRED,
    BODY_INVALID,
    WireRefusal,
    dashscope_endpoint,
    json_response,
    request_id,
)
from videosynth.api.dashscope.hooks import hook_routes
from videosynth.api.dashscope.uploads import UPLOAD_PATH, policy_data, receive_upload
from videosynth.api.hooks import check_endpoint_url
from videosynth.api.services import Services, SubmitIdentity, TaskRequest, now_ms
from videosynth.errors import InvalidRequest, NotCancelable
from videosynth.storage.base import ObjectExists, Storage
from videosynth.tasks.models import CancelOutcome, TaskStatus

log = logging.getLogger(__name__)
Endpoint = Callable[[Request], Awaitable[Response]]
SUBMIT_PATH = "/api/v1/services/aigc/video-generation/video-synthesis"
#: Our extension: where this task's own events go (unmodified DashScope clients never send it).
CALLBACK_HEADER = "x-videosynth-callback-url"
# Nine 20 MB images as base64 data URLs, plus the JSON around them.
MAX_BODY_BYTES = 256 * 1024 * 1024


BODY_TOO_LARGE = f"The request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MB."


def dashscope_routes(services: Services) -> list[Route]:
    routes: list[Route] = []

    def route(method: str, *paths: str) -> Callable[[Endpoint], Endpoint]:
        def register(endpoint: Endpoint) -> Endpoint:
            for path in paths:
                routes.append(Route(path, dashscope_endpoint(endpoint), methods=[method]))
            return endpoint

        return register

    settings, store, storage, catalog = services.settings, services.store, services.storage, services.catalog
    tz = settings.tz
    auth = services.auth

    @route("POST", SUBMIT_PATH)
    async def submit(request: Request) -> Response:
        key = await auth.authenticate(request.headers.get("authorization"))
        if request.headers.get("x-dashscope-async", "").strip().lower() != "enable":
            raise WireRefusal(ASYNC_REQUIRED.status, ASYNC_REQUIRED.code, ASYNC_REQUIRED.message)
        raw = await read_capped(request, MAX_BODY_BYTES, BODY_TOO_LARGE)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nesting past ~970 levels
            raise WireRefusal(BODY_INVALID.status, BODY_INVALID.code, BODY_INVALID.message) from None
        resolve_oss = request.headers.get("x-dashscope-ossresourceresolve", "").strip().lower() == "enable"
        parsed = wire_requests.parse_submit(body, catalog, resolve_oss=resolve_oss)
        callback = request.headers.get(CALLBACK_HEADER)
        if callback is not None:
            callback = check_endpoint_url(callback.strip(), settings, "X-Videosynth-Callback-Url")
        again = submit_identity(request, body, raw, resolve_oss, callback)

        async def client_gone() -> bool:
            return await request.is_disconnected()

        submitted = await services.submit(
            key,
            request_id(request),
            TaskRequest(
                model=parsed.model,
                prompt=parsed.prompt,
                media_urls=parsed.media_urls,
                resolution=parsed.resolution,
                ratio=parsed.ratio,
                duration=parsed.duration,
                seed=parsed.seed,
                watermark=parsed.watermark,
                callback_url=callback,
            ),
            again,
            client_gone,
        )
        # A replay answers as the first try was answered: the task as it was submitted.
        headers = {"idempotent-replayed": "true"} if submitted.replayed else None
        return json_response(request, responses.submitted(submitted.task_id), headers=headers)

    @route("GET", "/api/v1/tasks/{task_id}")
    async def query(request: Request) -> Response:
        task_id: str = request.path_params["task_id"]
        key = await auth.authenticate(request.headers.get("authorization"))
        await services.admit_query(key)
        task = await services.calls.get_task(task_id)
        if task is None or task.account_id != key.account_id:
            return json_response(request, responses.unknown_output(task_id))
        ahead = (
            await services.calls.read(store.tasks_ahead, task) if task.status is TaskStatus.PENDING else None
        )
        return json_response(request, responses.task_output(task, tz, services.result_link(task), ahead))

    @route("POST", "/api/v1/tasks/{task_id}/cancel")
    async def cancel(request: Request) -> Response:
        task_id: str = request.path_params["task_id"]
        key = await auth.authenticate(request.headers.get("authorization"))
        # PENDING tasks are canceled at once, as in the hosted service; RUNNING ones (our extension) are
        # flagged and their worker stops within a second and records CANCELED.
        outcome = await run_in_threadpool(store.request_cancel, task_id, key.account_id, now_ms())
        if outcome is CancelOutcome.REFUSED:
            raise NotCancelable()
        return json_response(request, {})

    @route("GET", "/api/v1/tasks", "/api/v1/tasks/")
    async def list_tasks(request: Request) -> Response:
        key = await auth.authenticate(request.headers.get("authorization"))
        await services.admit_query(key)
        q = wire_requests.parse_list_query(request.query_params, tz, now_ms())
        if q.filter is None:
            return json_response(request, responses.list_page(0, q.page_no, q.page_size, []))
        total, tasks = await run_in_threadpool(
            store.list, key.account_id, q.filter, (q.page_no - 1) * q.page_size, q.page_size
        )
        return json_response(request, responses.list_page(total, q.page_no, q.page_size, tasks))

    @route("GET", "/api/v1/uploads")
    async def upload_policy(request: Request) -> Response:
        key = await auth.authenticate(request.headers.get("authorization"))
        if request.query_params.get("action") != "getPolicy":
            raise InvalidRequest(
                "Required parameter(action) missing or invalid; only getPolicy is supported."
            )
        await services.check_upload_room(key)
        policy = uploads.issue(services.upload_secret, key.account_id, time.time())
        return json_response(request, {"data": policy_data(policy, settings.public_url)})

    @route("POST", UPLOAD_PATH)
    async def upload_file(request: Request) -> Response:
        with tempfile.TemporaryDirectory(prefix="videosynth-upload-") as scratch:
            received = await receive_upload(request, services.upload_secret, Path(scratch))
            assert received.file is not None
            content_type = received.fields.get("x-oss-content-type") or "application/octet-stream"
            size = received.file.stat().st_size
            await run_in_threadpool(
                _store_upload,
                storage,
                uploads.STORAGE_PREFIX + received.object_key,
                received.file,
                content_type,
            )
        owner = uploads.owner_of(received.object_key)
        if owner is not None:
            try:
                await services.record_upload(
                    owner,
                    uploads.STORAGE_PREFIX + received.object_key,
                    size,
                    uploads.UPLOAD_KEEP_DAYS * 86400,
                )
            except Exception:
                log.warning("could not count an upload against its account's quota", exc_info=True)
        return Response(status_code=200)

    @route("GET", "/api/v1/models")
    async def models(request: Request) -> Response:
        # Open to all, as before; with a key it also shows that key's effective limits.
        body: dict[str, Any] = {"data": [m.describe() for m in catalog]}
        if request.headers.get("authorization"):
            key = await auth.authenticate(request.headers.get("authorization"))
            body["limits"] = services.limits(key).describe()
        else:
            body["limits"] = services.default_limits().describe()
        return json_response(request, body)

    hook_routes(services, route)
    return routes


#: An Idempotency-Key is an opaque string of visible ASCII (as in the IETF draft and Stripe's API).
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def submit_identity(
    request: Request, body: object, raw: bytes, resolve_oss: bool, callback_url: str | None = None
) -> SubmitIdentity | None:
    """How this submit is recognised if it comes again: its Idempotency-Key, else the SDK session that may
    retry it by itself; None for a client that does neither."""
    idempotency_key = request.headers.get("idempotency-key")
    session = request.headers.get("x-dashscope-sdk-session-id")
    if idempotency_key is None and not session:
        return None
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise InvalidRequest("Idempotency-Key must be 1 to 255 visible ASCII characters.")
    try:
        # The same JSON, whatever its key order or spacing, is the same request.
        canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer past 64 bits, say: the bytes as sent
        canonical = raw
    digest = hashlib.sha256(canonical)
    digest.update(b"\x00oss-resolve" if resolve_oss else b"\x00")
    if callback_url is not None:  # the same body to another callback is another request
        digest.update(b"\x00callback:" + callback_url.encode())
    return SubmitIdentity(
        fingerprint=digest.hexdigest(),
        idempotency_key=idempotency_key,
        session=session[:200] if idempotency_key is None and session else None,
    )


def _store_upload(storage: Storage, key: str, path: Path, content_type: str) -> None:
    try:
        # x-oss-forbid-overwrite: an upload never replaces an earlier one, even a concurrent one.
        storage.put_file(key, path, content_type, overwrite=False)
    except ObjectExists:
        raise InvalidRequest("The object already exists.") from None
