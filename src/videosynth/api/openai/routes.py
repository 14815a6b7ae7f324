"""The OpenAI-style Videos API over the same tasks: create, retrieve, list, delete, download content.

A video's id is its task's id, so a video created here is a task of the DashScope dialect and the other way
round; keys, accounts, limits, storage and engines are the same (:class:`~videosynth.api.services.Services`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.routing import Route
from starlette.types import Message

from videosynth.api.bodies import read_capped
from videosynth.api.openai import requests as wire_requests
from videosynth.api.openai import responses
from videosynth.api.openai.errors import (
    INVALID,
    WireError,
    WireRefusal,
    bad_param,
    json_response,
    openai_endpoint,
    request_id,
    video_not_found,
)
from videosynth.api.openai.requests import Upload
from videosynth.api.services import Services, SubmitIdentity, TaskRequest
from videosynth.errors import InvalidRequest, PayloadTooLarge
from videosynth.media.fetch import DEFAULT_MAX_BYTES as MAX_REFERENCE_BYTES
from videosynth.tasks.models import ApiKey, Task, TaskStatus

Endpoint = Callable[[Request], Awaitable[Response]]
PREFIX = "/v1"
VIDEOS_PATH = f"{PREFIX}/videos"
#: Nine 20 MB images, as files or as base64 data URLs, plus the fields around them.
MAX_BODY_BYTES = 256 * 1024 * 1024
BODY_TOO_LARGE = f"The request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MB."
VARIANTS = ("video", "thumbnail")
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def openai_routes(services: Services) -> list[Route]:
    routes: list[Route] = []

    def route(method: str, path: str) -> Callable[[Endpoint], Endpoint]:
        def register(endpoint: Endpoint) -> Endpoint:
            routes.append(Route(path, openai_endpoint(endpoint), methods=[method]))
            return endpoint

        return register

    auth = services.auth

    async def own_video(request: Request, key: ApiKey) -> Task:
        video_id: str = request.path_params["video_id"]
        task = await services.calls.get_task(video_id)
        if task is None or task.account_id != key.account_id:
            raise video_not_found(video_id)
        return task

    def video(task: Task) -> dict[str, Any]:
        return responses.video(task, services.expires_at_s(task))

    @route("POST", VIDEOS_PATH)
    async def create(request: Request) -> Response:
        key = await auth.authenticate(request.headers.get("authorization"))
        parsed = await _parse_create(request, services)
        again = _identity(request, parsed)
        submitted = await services.submit(key, request_id(request), parsed, again)
        task = await services.calls.get_task(submitted.task_id)
        if task is None:  # deleted between its submit and this read
            raise video_not_found(submitted.task_id)
        headers = {"idempotent-replayed": "true"} if submitted.replayed else None
        return json_response(request, video(task), headers=headers)

    @route("GET", VIDEOS_PATH)
    async def list_videos(request: Request) -> Response:
        key = await auth.authenticate(request.headers.get("authorization"))
        await services.admit_query(key)
        q = wire_requests.parse_list_query(request.query_params)
        after: Task | None = None
        if q.after is not None:
            after = await services.calls.get_task(q.after)
            if after is None or after.account_id != key.account_id:
                raise bad_param("after", f"No video found with id '{q.after[:100]}'.", "video_not_found")
        tasks = await services.calls.read(
            services.store.page, key.account_id, after, q.limit + 1, newest_first=q.newest_first
        )
        body = responses.page([video(t) for t in tasks[: q.limit]], has_more=len(tasks) > q.limit)
        return json_response(request, body)

    @route("GET", VIDEOS_PATH + "/{video_id}")
    async def retrieve(request: Request) -> Response:
        key = await auth.authenticate(request.headers.get("authorization"))
        await services.admit_query(key)
        return json_response(request, video(await own_video(request, key)))

    @route("DELETE", VIDEOS_PATH + "/{video_id}")
    async def delete(request: Request) -> Response:
        key = await auth.authenticate(request.headers.get("authorization"))
        await services.admit_query(key)
        video_id: str = request.path_params["video_id"]
        # Whatever its status: a queued or running video is canceled by being deleted (its worker stops).
        if await services.delete_task(key, video_id) is None:
            raise video_not_found(video_id)
        return json_response(request, responses.deleted(video_id))

    @route("GET", VIDEOS_PATH + "/{video_id}/content")
    async def content(request: Request) -> Response:
        key = await auth.authenticate(request.headers.get("authorization"))
        await services.admit_query(key)
        variant = request.query_params.get("variant") or "video"
        if variant not in VARIANTS:
            raise bad_param(
                "variant", f"Unsupported variant '{variant[:40]}'; this server has: {', '.join(VARIANTS)}."
            )
        task = await own_video(request, key)
        if task.status is not TaskStatus.SUCCEEDED:
            raise _not_ready(task)
        rid = {"x-request-id": request_id(request)}
        if variant == "thumbnail":
            still = await services.thumbnail(task)
            if still is None:
                raise _not_ready(task)
            return Response(still, media_type="image/jpeg", headers=rid)
        path = services.result_file(task)
        if path is not None:
            if not path.is_file():
                raise _not_ready(task)
            return FileResponse(path, media_type="video/mp4", headers=rid)
        link = services.result_link(task)
        if link is None:
            raise _not_ready(task)
        # An object store's signed link: the SDK follows it, and drops its Authorization on the way.
        return RedirectResponse(link, status_code=302, headers=rid)

    return routes


def _not_ready(task: Task) -> WireRefusal:
    return WireRefusal(
        WireError(
            404,
            INVALID,
            "video_not_ready",
            f"Video '{task.task_id}' has no content: it is {responses.STATUS[task.status]}, not completed.",
            "video_id",
        )
    )


def _capped(request: Request) -> Request:
    """``request`` whose body reading stops with ``PayloadTooLarge`` once past :data:`MAX_BODY_BYTES`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(BODY_TOO_LARGE)
    received = 0
    upstream = request.receive

    async def receive() -> Message:
        nonlocal received
        message = await upstream()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES:
                raise PayloadTooLarge(BODY_TOO_LARGE)
        return message

    return Request(request.scope, receive)


async def _parse_create(request: Request, services: Services) -> TaskRequest:
    capped = _capped(request)
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        catalog = services.catalog
        most = max(m.max_references for m in catalog)
        try:
            form = await capped.form(max_files=most, max_fields=100)
        except MultiPartException as exc:
            raise bad_param("body", f"The multipart body cannot be read: {exc.message}") from None
        try:
            fields: list[tuple[str, str | Upload]] = []
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    if value.size is not None and value.size > MAX_REFERENCE_BYTES:
                        raise bad_param(
                            "input_reference",
                            f"input_reference {value.filename or name!r:.60} is larger than "
                            f"{MAX_REFERENCE_BYTES // (1024 * 1024)} MB.",
                            "image_too_large",
                        )
                    fields.append((name, Upload(value.filename or "", await value.read())))
                else:
                    fields.append((name, value))
        finally:
            await form.close()
        return wire_requests.parse_form(fields, catalog)
    raw = await read_capped(request, MAX_BODY_BYTES, BODY_TOO_LARGE)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_param(
            "body", "The body must be JSON, or a multipart form (input_reference files).", "invalid_json"
        ) from None
    return wire_requests.parse_json(body, services.catalog)


def _identity(request: Request, parsed: TaskRequest) -> SubmitIdentity | None:
    """An ``Idempotency-Key`` and the fingerprint of what was asked for (the same request in JSON or as a
    form, with the same images, is the same request)."""
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise InvalidRequest("Idempotency-Key must be 1 to 255 visible ASCII characters.")
    digest = hashlib.sha256(b"openai-videos\x00")
    for part in (
        parsed.model.name,
        parsed.prompt,
        parsed.resolution,
        parsed.ratio,
        str(parsed.duration),
        *parsed.media_urls,
    ):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return SubmitIdentity(fingerprint=digest.hexdigest(), idempotency_key=idempotency_key)
