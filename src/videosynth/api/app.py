"""``create_app``: the DashScope task API over a store and a storage."""

from __future__ import annotations

import json
import math
import secrets
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile as StarletteUploadFile

from videosynth import __version__, sizes, uploads
from videosynth.api import errors, wire
from videosynth.apikeys import hash_key
from videosynth.catalog import Catalog
from videosynth.errors import AsyncRequired, InvalidApiKey, InvalidParameter, UnsupportedOperation
from videosynth.settings import Settings
from videosynth.storage.base import Storage
from videosynth.storage.local import LocalStorage
from videosynth.tasks.models import ApiKey, CancelOutcome, GenerationParams, NewTask, TaskFilter, TaskStatus
from videosynth.tasks.store import TaskStore

SUBMIT_PATH = "/api/v1/services/aigc/video-generation/video-synthesis"
# Nine 20 MB images as base64 data URLs, plus the JSON around them.
MAX_BODY_BYTES = 256 * 1024 * 1024
MAX_PAGE_SIZE = 100
DAY_MS = 24 * 3600 * 1000
UPLOAD_SECRET = "upload-policy"


def now_ms() -> int:
    return int(time.time() * 1000)


def create_app(*, settings: Settings, store: TaskStore, storage: Storage, catalog: Catalog) -> FastAPI:
    app = FastAPI(title="videosynth", version=__version__, docs_url="/docs", redoc_url=None)
    errors.install(app)
    tz = settings.tz

    async def authenticate(request: Request) -> ApiKey:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if not header or scheme.lower() != "bearer" or not token:
            raise InvalidApiKey("No API-key provided.")
        key = await run_in_threadpool(store.find_key, hash_key(token))
        if key is None:
            raise InvalidApiKey("Invalid API-key provided.")
        return key

    def video_url(result_key: str | None, end_ms: int | None) -> str | None:
        if not result_key or end_ms is None:
            return None
        # Signed from the finish time, so every poll returns the same link and it lives 24 h like the hosted one.
        return storage.url_for(result_key, end_ms // 1000 + settings.url_ttl_seconds)

    @app.post(SUBMIT_PATH)
    async def submit(request: Request) -> JSONResponse:
        key = await authenticate(request)
        if request.headers.get("x-dashscope-async", "").strip().lower() != "enable":
            raise AsyncRequired()
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise InvalidParameter(f"The request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MB.")
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise InvalidParameter(f"The request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MB.")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise InvalidParameter("Required body invalid, please check the request body format.") from None
        resolve_oss = request.headers.get("x-dashscope-ossresourceresolve", "").strip().lower() == "enable"
        req = wire.parse_submit(body, catalog, resolve_oss=resolve_oss)
        width, height = sizes.frame_size(req.resolution, req.ratio)
        task = NewTask(
            task_id=str(uuid.uuid4()),
            account_id=key.account_id,
            api_key_id=key.key_id,
            request_id=errors.request_id(request),
            model=req.model.name,
            engine=req.model.engine,
            prompt=req.prompt,
            media_urls=req.media_urls,
            params=GenerationParams(
                resolution=req.resolution,
                ratio=req.ratio,
                duration=req.duration,
                seed=req.seed if req.seed is not None else secrets.randbelow(wire.SEED_MAX + 1),
                watermark=req.watermark,
                width=width,
                height=height,
            ),
            submit_time_ms=now_ms(),
        )
        await run_in_threadpool(store.create, task)
        return errors.json_response(
            request, {"output": {"task_status": TaskStatus.PENDING.value, "task_id": task.task_id}}
        )

    @app.get("/api/v1/tasks/{task_id}")
    async def query(task_id: str, request: Request) -> JSONResponse:
        key = await authenticate(request)
        task = await run_in_threadpool(store.get, task_id)
        if task is None or task.account_id != key.account_id:
            return errors.json_response(request, wire.unknown_output(task_id))
        return errors.json_response(
            request, wire.task_output(task, tz, video_url(task.result_key, task.end_time_ms))
        )

    @app.post("/api/v1/tasks/{task_id}/cancel")
    async def cancel(task_id: str, request: Request) -> JSONResponse:
        key = await authenticate(request)
        # PENDING tasks are canceled at once, as in the hosted service; RUNNING ones (our extension) are
        # flagged and their worker stops within a second and records CANCELED.
        outcome = await run_in_threadpool(store.request_cancel, task_id, key.account_id, now_ms())
        if outcome is CancelOutcome.REFUSED:
            raise UnsupportedOperation()
        return errors.json_response(request, {})

    @app.get("/api/v1/tasks")
    @app.get("/api/v1/tasks/", include_in_schema=False)
    async def list_tasks(request: Request) -> JSONResponse:
        key = await authenticate(request)
        q = request.query_params
        page_no = _positive_int(q.get("page_no"), "page_no", 1)
        page_size = min(_positive_int(q.get("page_size"), "page_size", 10), MAX_PAGE_SIZE)
        status = None
        if q.get("status"):
            name = q["status"].upper()
            if name == "UNKNOWN":
                # Unknown tasks are, by definition, not in the table.
                return errors.json_response(
                    request, {"total": 0, "total_page": 0, "page_no": page_no, "page_size": page_size, "data": []}
                )
            try:
                status = TaskStatus(name)
            except ValueError:
                raise InvalidParameter(f"The status is not valid: {q['status']!r:.40}.") from None
        start_ms = wire.parse_list_time(q["start_time"], tz, "start_time") if q.get("start_time") else None
        end_ms = wire.parse_list_time(q["end_time"], tz, "end_time") if q.get("end_time") else None
        # The hosted service lists a 24 h window, the last 24 h by default.
        if start_ms is None and end_ms is None:
            end_ms = now_ms()
        if start_ms is None and end_ms is not None:
            start_ms = end_ms - DAY_MS
        if end_ms is None and start_ms is not None:
            end_ms = start_ms + DAY_MS
        flt = TaskFilter(
            status=status,
            model=q.get("model_name") or None,
            task_id=q.get("task_id") or None,
            api_key_id=q.get("api_key_id") or None,
            start_ms=start_ms,
            end_ms=end_ms,
        )
        total, tasks = await run_in_threadpool(
            store.list, key.account_id, flt, (page_no - 1) * page_size, page_size
        )
        return errors.json_response(
            request,
            {
                "total": total,
                "total_page": math.ceil(total / page_size) if total else 0,
                "page_no": page_no,
                "page_size": page_size,
                "data": [wire.list_entry(t) for t in tasks],
            },
        )

    upload_secret = store.get_or_create_secret(UPLOAD_SECRET, lambda: secrets.token_urlsafe(32))

    @app.get("/api/v1/uploads")
    async def upload_policy(request: Request) -> JSONResponse:
        key = await authenticate(request)
        if request.query_params.get("action") != "getPolicy":
            raise InvalidParameter("Required parameter(action) missing or invalid; only getPolicy is supported.")
        return errors.json_response(
            request, {"data": uploads.issue(upload_secret, key.account_id, time.time(), settings.public_url)}
        )

    @app.post("/api/v1/uploads/oss")
    async def upload_file(request: Request) -> Response:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > (uploads.MAX_FILE_MB + 1) * 1024 * 1024:
            raise InvalidParameter(f"Invalid file size. The file size must be less than {uploads.MAX_FILE_MB}MB.")
        try:
            form = await request.form(max_files=1, max_fields=20)
        except Exception:  # malformed multipart bodies are the client's problem, not a 500
            raise InvalidParameter("Required body invalid, please check the request body format.") from None
        try:
            policy = uploads.verify(
                upload_secret, str(form.get("policy") or ""), str(form.get("Signature") or ""), time.time()
            )
            if policy is None:
                return errors.error_response(
                    request, 403, "AccessDenied", "Invalid according to Policy: Policy expired or signature mismatch."
                )
            object_key = str(form.get("key") or "")
            upload = form.get("file")
            if not uploads.key_in_dir(object_key, policy.upload_dir) or not isinstance(upload, StarletteUploadFile):
                raise InvalidParameter("The form needs a key inside the policy's upload_dir and a file.")
            if upload.size is not None and upload.size > policy.max_bytes:
                raise InvalidParameter(f"Invalid file size. The file size must be less than {uploads.MAX_FILE_MB}MB.")
            content_type = str(form.get("x-oss-content-type") or "application/octet-stream")
            await run_in_threadpool(_store_upload, storage, uploads.STORAGE_PREFIX + object_key, upload, content_type)
        finally:
            await form.close()
        return Response(status_code=200)

    @app.get("/api/v1/models")
    async def models(request: Request) -> JSONResponse:
        return errors.json_response(request, {"data": [m.describe() for m in catalog]})

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    if isinstance(storage, LocalStorage):
        local = storage

        @app.api_route("/files/{key:path}", methods=["GET", "HEAD"], include_in_schema=False)
        async def files(key: str, request: Request) -> Response:
            expires = request.query_params.get("Expires", "")
            signature = request.query_params.get("Signature", "")
            if not expires.isdigit() or not local.verify(key, int(expires), signature, time.time()):
                return errors.error_response(
                    request, 403, "AccessDenied", "The link is unsigned, tampered with or expired."
                )
            try:
                path = local.path_for(key)
            except Exception:
                return errors.error_response(request, 404, "NotFound", "Not found!")
            if not path.is_file():
                return errors.error_response(request, 404, "NotFound", "Not found!")
            return FileResponse(path, media_type="video/mp4" if key.endswith(".mp4") else None)

    return app


def _store_upload(storage: Storage, key: str, upload: StarletteUploadFile, content_type: str) -> None:
    if storage.exists(key):
        # x-oss-forbid-overwrite: an upload never replaces an earlier one.
        raise InvalidParameter("The object already exists.")
    with tempfile.NamedTemporaryFile(prefix="upload-") as tmp:
        upload.file.seek(0)
        shutil.copyfileobj(upload.file, tmp)
        tmp.flush()
        storage.put_file(key, Path(tmp.name), content_type)


def _positive_int(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    if not value.isdigit() or int(value) < 1:
        raise InvalidParameter(f"The {name} is not valid: {value!r:.20}; it must be a positive integer.")
    return int(value)
