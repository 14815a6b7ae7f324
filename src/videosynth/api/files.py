"""``/files/{key}``: results (and nothing else a client did not get a link for) from local storage.

Only mounted when storage is a local directory; S3 links point at the S3 server itself. The links are
handed out by every dialect, so the answers here are plain: a status and a small JSON body.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from videosynth.errors import VideosynthError
from videosynth.storage.local import LocalStorage


def _refusal(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


def files_router(storage: LocalStorage) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.api_route("/files/{key:path}", methods=["GET", "HEAD"])
    async def files(key: str, request: Request) -> Response:
        expires = request.query_params.get("Expires", "")
        signature = request.query_params.get("Signature", "")
        # ASCII digits only ("²" passes isdigit()), and few enough for int() to be cheap.
        valid_expiry = expires.isascii() and expires.isdigit() and len(expires) <= 12
        if not valid_expiry or not storage.verify(key, int(expires), signature, time.time()):
            return _refusal(403, "AccessDenied", "The link is unsigned, tampered with or expired.")
        try:
            path = storage.path_for(key)
            # is_file() is False for a missing file but raises for a name the filesystem cannot hold.
            found = path.is_file()
        except (VideosynthError, OSError):
            found = False
        if not found:
            return _refusal(404, "NotFound", "Not found!")
        return FileResponse(path, media_type="video/mp4" if key.endswith(".mp4") else None)

    return router
