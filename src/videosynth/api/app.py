"""``create_app``: the HTTP API over a store and a storage, one router per wire dialect.

A dialect is a package beside ``api/dashscope/`` that turns HTTP into :class:`~videosynth.api.services.Services`
calls and domain results and errors back into its own wire shapes. Requests that match no route get the
error shape of the dialect whose path prefix they carry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from videosynth import __version__
from videosynth.api import dashscope, openai
from videosynth.api.console import console_routes
from videosynth.api.docs import docs_routes
from videosynth.api.files import files_router
from videosynth.api.observe import ObserveMiddleware, metrics_endpoint, metrics_registry
from videosynth.api.services import Services
from videosynth.catalog import Catalog
from videosynth.errors import StoreError
from videosynth.observability.metrics import Snapshot, TaskCountRow
from videosynth.settings import Settings
from videosynth.storage.base import Storage
from videosynth.storage.local import LocalStorage
from videosynth.tasks.models import TaskStatus
from videosynth.tasks.store import TaskStore

TITLE = "videosynth"


def openapi_document(catalog: Catalog) -> dict[str, Any]:
    """The OpenAPI document of every dialect this server speaks, for ``catalog``'s models."""
    document = dashscope.openapi_document(catalog, title=TITLE, version=__version__)
    # Each dialect names its components apart (OpenAI*), so the parts merge without collisions.
    other = openai.openapi_document(catalog)
    document["paths"].update(other["paths"])
    for section, entries in other["components"].items():
        document["components"].setdefault(section, {}).update(entries)
    document["tags"] = [*document.get("tags", []), *other["tags"]]
    document["info"]["description"] += (
        " The same tasks are also served in the OpenAI-style Videos API under /v1/videos: a task created in "
        "one dialect is read, listed and deleted or canceled in the other by the same id."
    )
    return document


def create_app(
    *,
    settings: Settings,
    store: TaskStore,
    storage: Storage,
    catalog: Catalog,
    workers: Callable[[], list[dict[str, Any]]] | None = None,
    worker_metrics: Sequence[Callable[[], Iterable[Snapshot]]] = (),
    task_stats: Callable[[], Iterable[TaskCountRow]] | None = None,
) -> FastAPI:
    """``workers``: the embedded workers' readiness (``/readyz``); ``worker_metrics``: the metric snapshots they
    report; ``task_stats``: the task table counted by status, model and engine (``/metrics`` gauges)."""
    # FastAPI's own OpenTelemetry hooks off: /metrics and the JSON logs are this server's telemetry, and the
    # hooks' check for a configured provider (environment reads, on every request) cost a poll about 11 us.
    app = FastAPI(
        title=TITLE,
        version=__version__,
        docs_url=None,
        redoc_url=None,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    registry, http_metrics = metrics_registry(
        worker_snapshots=worker_metrics,
        task_counts=task_stats or store.task_counts,
        known_models=[(m.name, m.engine) for m in catalog],
        statuses=[s.value for s in TaskStatus],
    )
    app.add_middleware(ObserveMiddleware, metrics=http_metrics, routes=app.router.routes)
    app.add_route(
        "/metrics",
        metrics_endpoint(registry, settings.metrics_token),
        methods=["GET"],
        include_in_schema=False,
    )
    services = Services(settings=settings, store=store, storage=storage, catalog=catalog)
    app.state.stopping = services.stopping  # set by whoever stops the server: event streams end
    app.router.routes.extend(dashscope.dashscope_routes(services))
    app.router.routes.extend(openai.openai_routes(services))
    # The console's player loads results from wherever their links point: this server, or an object store.
    app.router.routes.extend(console_routes(() if isinstance(storage, LocalStorage) else ("https:", "http:")))
    if isinstance(storage, LocalStorage):
        app.include_router(files_router(storage))
    app.router.routes.extend(docs_routes(app.title))

    def openapi() -> dict[str, Any]:
        # The dialects' routes are plain Starlette ones that FastAPI cannot describe: each dialect writes its
        # own part, and whatever FastAPI can describe is added to it.
        if app.openapi_schema is None:
            document = openapi_document(catalog)
            generated = get_openapi(title=app.title, version=app.version, routes=app.routes)
            document["paths"].update(generated.get("paths", {}))
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        # Ready when the store answers and every embedded worker has at least one engine that loaded (an
        # API-only server: the store alone). A load balancer takes a replica out while its store is away.
        local = workers() if workers is not None else []
        try:
            await run_in_threadpool(store.ping)
            store_state = "ok"
        except StoreError as exc:
            store_state = f"unavailable: {exc}"
        ready = store_state == "ok" and all(
            any(e.get("state") == "ready" for e in w.get("engines", [])) for w in local
        )
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "store": store_state, "workers": local},
            status_code=200 if ready else 503,
        )

    async def unrouted(request: Request, exc: Exception) -> Response:
        # A request that matched no route answers in the shape of the dialect whose prefix it carries.
        path: str = request.scope.get("path", "")
        if path == openai.PREFIX or path.startswith(openai.PREFIX + "/"):
            return openai.render_exception(request, exc)
        return dashscope.render_exception(request, exc)

    app.add_exception_handler(StarletteHTTPException, unrouted)
    app.add_exception_handler(RequestValidationError, unrouted)
    app.add_exception_handler(Exception, unrouted)
    return app
