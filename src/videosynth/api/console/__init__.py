"""The web console: a page at ``/`` and its files under ``/console/``, served from this package.

Plain HTML, CSS and JavaScript modules (no build step, nothing from a CDN). The page is a client of the
public DashScope wire of the same origin and nothing else: the key a user pastes stays in the browser's
sessionStorage and travels only as the ``Authorization`` header of the ``/api/v1`` calls it makes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).parent / "static"
ASSETS = "/console"


def content_security_policy(media_sources: Sequence[str] = ()) -> str:
    """Everything from this origin; thumbnails are ``blob:`` URLs of the picked files; the player may also
    load from ``media_sources`` (the origin of result links that are not this server's, such as S3's)."""
    media = " ".join(["'self'", "blob:", *media_sources])
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' blob:",
            f"media-src {media}",
            "connect-src 'self'",
            "manifest-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ]
    )


def _security_headers(media_sources: Sequence[str]) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(media_sources),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        # Not fingerprinted: a browser keeps the files but asks (If-None-Match) before each use, so an
        # upgraded server's console is never mixed with an old cached script.
        "Cache-Control": "no-cache",
    }


class _ConsoleFiles(StaticFiles):
    """The console's files with its headers; no directory listings, no index pages."""

    def __init__(self, directory: Path, headers: dict[str, str]) -> None:
        super().__init__(directory=directory, html=False)
        self._headers = headers

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(self._headers)
        return response


def console_routes(media_sources: Sequence[str] = ()) -> list[BaseRoute]:
    """``GET /`` (the page) and ``/console/...`` (its script, style and icon)."""
    headers = _security_headers(media_sources)
    page = (STATIC / "index.html").read_bytes()
    etag = '"' + hashlib.sha256(page).hexdigest()[:32] + '"'
    page_headers = {**headers, "ETag": etag}

    async def index(request: Request) -> Response:
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=page_headers)
        return Response(page, media_type="text/html; charset=utf-8", headers=page_headers)

    return [
        Route("/", index, methods=["GET", "HEAD"], include_in_schema=False),
        Mount(ASSETS, app=_ConsoleFiles(STATIC, headers), name="console"),
    ]


__all__ = ["console_routes", "content_security_policy"]
