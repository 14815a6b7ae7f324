"""``create_app``: the HTTP API over a store and a storage, one router per wire dialect.

A dialect is a package beside ``api/dashscope/`` that turns HTTP into :class:`~videosynth.api.services.Services`
calls and domain results and errors back into its own wire shapes. Requests that match no route get the
error shape of the dialect whose path prefix they carry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from videosynth import __version__
from videosynth.api import dashscope
from videosynth.api.files import files_router
from videosynth.api.services import Services
from videosynth.catalog import Catalog
from videosynth.settings import Settings
from videosynth.storage.base import Storage
from videosynth.storage.local import LocalStorage
from videosynth.tasks.store import TaskStore


def create_app(
    *,
    settings: Settings,
    store: TaskStore,
    storage: Storage,
    catalog: Catalog,
    workers: Callable[[], list[dict[str, Any]]] | None = None,
) -> FastAPI:
    app = FastAPI(title="videosynth", version=__version__, docs_url="/docs", redoc_url=None)
    services = Services(settings=settings, store=store, storage=storage, catalog=catalog)
    app.router.routes.extend(dashscope.dashscope_routes(services))
    if isinstance(storage, LocalStorage):
        app.include_router(files_router(storage))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        # Ready when every embedded worker has at least one engine that loaded (an API-only server: always).
        local = workers() if workers is not None else []
        ready = all(any(e.get("state") == "ready" for e in w.get("engines", [])) for w in local)
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "workers": local}, status_code=200 if ready else 503
        )

    async def unrouted(request: Request, exc: Exception) -> Response:
        # Only one dialect so far: everything that matched no route answers in DashScope's shape.
        return dashscope.render_exception(request, exc)

    app.add_exception_handler(StarletteHTTPException, unrouted)
    app.add_exception_handler(RequestValidationError, unrouted)
    app.add_exception_handler(Exception, unrouted)
    return app
