"""The API's side of operations: a pure ASGI middleware that counts and times every request and binds its
request id to the log lines it causes, and the ``/metrics`` endpoint.

Pure ASGI rather than Starlette's ``BaseHTTPMiddleware``: that one runs the app in a task of its own and
streams the answer through a memory channel, which a poll answered in about a millisecond would feel; this
one costs a clock read, a request id, a few dict lookups and increments per request (about 6 us).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.process_collector import ProcessCollector
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from videosynth.ids import uuid4_text
from videosynth.observability.logs import close_context, open_context
from videosynth.observability.metrics import (
    HttpMetrics,
    Snapshot,
    TaskCountRow,
    TaskStats,
    WorkerMetrics,
)

# Where the request id lives for the request's lifetime: the key ``videosynth.api.dashscope.errors.request_id``
# reads (and fills when absent), so the id in a log line is the one in the answer's body and header.
REQUEST_ID_KEY = "videosynth.request_id"
UNMATCHED = "unmatched"

access_log = logging.getLogger("videosynth.http")


class RouteTemplates:
    """The template of the route a request matched (``/api/v1/tasks/{task_id}``), never its raw path: a path
    per task id would be a series per task.

    FastAPI's router leaves the matched endpoint in the scope, not the route; the route is found from it once
    per endpoint (by matching, where several routes share one endpoint)."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self._routes = routes  # the app's live list: routes added after the app was built count too
        self._by_endpoint: dict[object, list[BaseRoute]] = {}

    def __call__(self, scope: Scope) -> str:
        route = scope.get("route")  # where Starlette's own router leaves it
        if route is None:
            endpoint = scope.get("endpoint")
            if endpoint is None:
                return UNMATCHED
            candidates = self._by_endpoint.get(endpoint)
            if candidates is None:
                candidates = [
                    r for r in self._routes if getattr(r, "endpoint", getattr(r, "app", None)) is endpoint
                ]
                self._by_endpoint[endpoint] = candidates
            if len(candidates) == 1:
                route = candidates[0]
            else:
                route = next((r for r in candidates if r.matches(scope)[0] is not Match.NONE), None)
        path = getattr(route, "path", None)
        return path if isinstance(path, str) and path else UNMATCHED


class ObserveMiddleware:
    def __init__(self, app: ASGIApp, metrics: HttpMetrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.template = RouteTemplates(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = scope[REQUEST_ID_KEY] = uuid4_text()
        token = open_context(request_id=rid)
        status = 500  # what the client gets if the app raises before it answers

        async def send_and_see(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_see)
        finally:
            elapsed = time.perf_counter() - started
            route = self.template(scope)
            method = scope["method"]
            self.metrics.observe(route, method, status, elapsed)
            if access_log.isEnabledFor(logging.DEBUG):
                access_log.debug(
                    "%s %s %d %.1f ms",
                    method,
                    scope["path"],  # without the query string, where signatures are
                    status,
                    elapsed * 1000,
                    extra={"route": route, "status": status, "duration_ms": round(elapsed * 1000, 3)},
                )
            close_context(token)


def metrics_registry(
    *,
    worker_snapshots: Sequence[Callable[[], Iterable[Snapshot]]] = (),
    task_counts: Callable[[], Iterable[TaskCountRow]] | None = None,
    known_models: Iterable[tuple[str, str]] = (),
    statuses: Sequence[str] = (),
) -> tuple[CollectorRegistry, HttpMetrics]:
    """The registry one app's ``/metrics`` serves: its HTTP metrics, the worker metrics of this process and of
    the embedded workers, the task table's counts, and the process's own (CPU, memory, open files)."""
    registry = CollectorRegistry()
    http = HttpMetrics()
    registry.register(http)
    registry.register(WorkerMetrics(worker_snapshots))
    if task_counts is not None:
        registry.register(TaskStats(task_counts, known=known_models, statuses=statuses))
    ProcessCollector(registry=registry)
    return registry, http


def metrics_endpoint(registry: CollectorRegistry, token: str | None) -> Callable[[Request], Response]:
    """``GET /metrics``, behind ``Authorization: Bearer <token>`` when a token is set.

    A plain function: Starlette runs it on a thread, so the task table's count never blocks the event loop."""
    expected = f"Bearer {token}".encode() if token else None

    def scrape(request: Request) -> Response:
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return PlainTextResponse(
                    "a bearer token is required\n",
                    401,
                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                )
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return scrape
