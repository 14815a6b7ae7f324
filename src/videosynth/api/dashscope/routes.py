"""The DashScope endpoints: submit, query, cancel, list, the SDK's upload flow, and the model list."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from videosynth import uploads
from videosynth.api.dashscope import requests as wire_requests
from videosynth.api.dashscope import responses
from videosynth.api.dashscope.errors import (
    ASYNC_REQUIRED,
    BODY_INVALID,
    DashScopeRoute,
    WireRefusal,
    json_response,
    request_id,
)
from videosynth.api.dashscope.uploads import UPLOAD_PATH, policy_data
from videosynth.api.services import Services, TaskRequest, now_ms
from videosynth.errors import InvalidRequest, NotCancelable
from videosynth.storage.base import ObjectExists, Storage
from videosynth.tasks.models import CancelOutcome

SUBMIT_PATH = "/api/v1/services/aigc/video-generation/video-synthesis"
# Nine 20 MB images as base64 data URLs, plus the JSON around them.
MAX_BODY_BYTES = 256 * 1024 * 1024


def _body_too_large() -> InvalidRequest:
    return InvalidRequest(f"The request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MB.")


def dashscope_router(services: Services) -> APIRouter:
    router = APIRouter(route_class=DashScopeRoute)
    settings, store, storage, catalog = services.settings, services.store, services.storage, services.catalog
    tz = settings.tz
    auth = services.auth

    @router.post(SUBMIT_PATH)
    async def submit(request: Request) -> JSONResponse:
        key = await auth.authenticate(request.headers.get("authorization"))
        if request.headers.get("x-dashscope-async", "").strip().lower() != "enable":
            raise WireRefusal(ASYNC_REQUIRED.status, ASYNC_REQUIRED.code, ASYNC_REQUIRED.message)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise _body_too_large()
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise _body_too_large()
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nesting past ~970 levels
            raise WireRefusal(BODY_INVALID.status, BODY_INVALID.code, BODY_INVALID.message) from None
        resolve_oss = request.headers.get("x-dashscope-ossresourceresolve", "").strip().lower() == "enable"
        parsed = wire_requests.parse_submit(body, catalog, resolve_oss=resolve_oss)
        task = await services.create_task(
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
            ),
        )
        return json_response(request, responses.submitted(task.task_id))

    @router.get("/api/v1/tasks/{task_id}")
    async def query(task_id: str, request: Request) -> JSONResponse:
        key = await auth.authenticate(request.headers.get("authorization"))
        task = await run_in_threadpool(store.get, task_id)
        if task is None or task.account_id != key.account_id:
            return json_response(request, responses.unknown_output(task_id))
        return json_response(request, responses.task_output(task, tz, services.result_link(task)))

    @router.post("/api/v1/tasks/{task_id}/cancel")
    async def cancel(task_id: str, request: Request) -> JSONResponse:
        key = await auth.authenticate(request.headers.get("authorization"))
        # PENDING tasks are canceled at once, as in the hosted service; RUNNING ones (our extension) are
        # flagged and their worker stops within a second and records CANCELED.
        outcome = await run_in_threadpool(store.request_cancel, task_id, key.account_id, now_ms())
        if outcome is CancelOutcome.REFUSED:
            raise NotCancelable()
        return json_response(request, {})

    @router.get("/api/v1/tasks")
    @router.get("/api/v1/tasks/", include_in_schema=False)
    async def list_tasks(request: Request) -> JSONResponse:
        key = await auth.authenticate(request.headers.get("authorization"))
        q = wire_requests.parse_list_query(request.query_params, tz, now_ms())
        if q.filter is None:
            return json_response(request, responses.list_page(0, q.page_no, q.page_size, []))
        total, tasks = await run_in_threadpool(
            store.list, key.account_id, q.filter, (q.page_no - 1) * q.page_size, q.page_size
        )
        return json_response(request, responses.list_page(total, q.page_no, q.page_size, tasks))

    @router.get("/api/v1/uploads")
    async def upload_policy(request: Request) -> JSONResponse:
        key = await auth.authenticate(request.headers.get("authorization"))
        if request.query_params.get("action") != "getPolicy":
            raise InvalidRequest(
                "Required parameter(action) missing or invalid; only getPolicy is supported."
            )
        policy = uploads.issue(services.upload_secret, key.account_id, time.time())
        return json_response(request, {"data": policy_data(policy, settings.public_url)})

    @router.post(UPLOAD_PATH)
    async def upload_file(request: Request) -> Response:
        too_big = InvalidRequest(
            f"Invalid file size. The file size must be less than {uploads.MAX_FILE_MB}MB."
        )
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > (uploads.MAX_FILE_MB + 1) * 1024 * 1024:
            raise too_big
        try:
            form = await request.form(max_files=1, max_fields=20)
        except Exception:  # noqa: BLE001 - malformed multipart bodies are the client's problem, not a 500
            raise WireRefusal(BODY_INVALID.status, BODY_INVALID.code, BODY_INVALID.message) from None
        try:
            policy = uploads.verify(
                services.upload_secret,
                str(form.get("policy") or ""),
                str(form.get("Signature") or ""),
                time.time(),
            )
            if policy is None:
                raise WireRefusal(
                    403, "AccessDenied", "Invalid according to Policy: Policy expired or signature mismatch."
                )
            object_key = str(form.get("key") or "")
            upload = form.get("file")
            if not uploads.key_in_dir(object_key, policy.upload_dir) or not isinstance(upload, UploadFile):
                raise InvalidRequest("The form needs a key inside the policy's upload_dir and a file.")
            if upload.size is not None and upload.size > policy.max_bytes:
                raise too_big
            content_type = str(form.get("x-oss-content-type") or "application/octet-stream")
            await run_in_threadpool(
                _store_upload, storage, uploads.STORAGE_PREFIX + object_key, upload, content_type
            )
        finally:
            await form.close()
        return Response(status_code=200)

    @router.get("/api/v1/models")
    async def models(request: Request) -> JSONResponse:
        return json_response(request, {"data": [m.describe() for m in catalog]})

    return router


def _store_upload(storage: Storage, key: str, upload: UploadFile, content_type: str) -> None:
    with tempfile.NamedTemporaryFile(prefix="upload-") as tmp:
        upload.file.seek(0)
        shutil.copyfileobj(upload.file, tmp)
        tmp.flush()
        try:
            # x-oss-forbid-overwrite: an upload never replaces an earlier one, even a concurrent one.
            storage.put_file(key, Path(tmp.name), content_type, overwrite=False)
        except ObjectExists:
            raise InvalidRequest("The object already exists.") from None
