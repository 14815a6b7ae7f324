"""Prometheus metrics: the HTTP API's, the workers', and the task table's (read at scrape time).

Worker metrics live in :data:`WORKER_REGISTRY`, one per process. The workers that ``serve`` embeds run in
child processes, so the API's ``/metrics`` cannot read their registries: each worker process sends a
:func:`snapshot` of its registry (plain tuples) up the queue it already reports its engines on, and the API
process adds them up (:class:`SnapshotBoard`, :class:`WorkerMetrics`). prometheus_client's multiprocess mode
would do the same through files, but it needs a directory shared by all the processes, named by an environment
variable before the library is first imported, wiped at each start, and told about every process that dies;
the queue is already there, and a worker that dies takes nothing with it but its last second of counts.
"""

from __future__ import annotations

import bisect
import hmac
import http.server
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# Polls answer in about a millisecond, submits in a few; the top buckets catch a stalled store.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A stage takes from milliseconds (fetching a stored input) to an hour (a long GPU generation, an upstream queue).
STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

# --- worker metrics (this process's workers) ---------------------------------------------------------------
WORKER_REGISTRY = CollectorRegistry()
WORKER_HEARTBEATS = Counter(
    "videosynth_worker_heartbeats",
    "Lease heartbeats the workers wrote for their running tasks (each renews a lease and reads the cancel flag).",
    registry=WORKER_REGISTRY,
)
WORKER_RESTARTS = Counter(
    "videosynth_worker_restarts",
    "Embedded worker processes of serve that exited and were started again.",
    registry=WORKER_REGISTRY,
)
ENGINE_RESTARTS = Counter(
    "videosynth_engine_restarts",
    "Engine processes lost (crashed, or killed after ignoring a stop) and replaced, by the engine running.",
    ["engine"],
    registry=WORKER_REGISTRY,
)
TASK_STAGE_SECONDS = Histogram(
    "videosynth_task_stage_duration_seconds",
    "Time a task spent in each progress stage (fetching, generating, the engine's own stages, storing, the"
    " relay's upstream stages).",
    ["engine", "stage"],
    buckets=STAGE_BUCKETS,
    registry=WORKER_REGISTRY,
)
TASKS_FINISHED = Counter(
    "videosynth_tasks_finished",
    "Tasks the workers finished, by engine and final status.",
    ["engine", "status"],
    registry=WORKER_REGISTRY,
)
RELAY_UPSTREAM_REQUESTS = Counter(
    "videosynth_relay_upstream_requests",
    "Calls of relay engines to their upstream service, by operation and outcome.",
    ["operation", "outcome"],
    registry=WORKER_REGISTRY,
)
WEBHOOK_DELIVERIES = Counter(
    "videosynth_webhook_deliveries",
    "Tries of webhook deliveries, by outcome: delivered (a 2xx), retrying (another try is scheduled), failed (the"
    " schedule is spent).",
    ["outcome"],
    registry=WORKER_REGISTRY,
)

# A snapshot: (family name, type, help, ((sample name, ((label, value), ...), value), ...)) per family.
SnapshotSample = tuple[str, tuple[tuple[str, str], ...], float]
SnapshotFamily = tuple[str, str, str, tuple[SnapshotSample, ...]]
Snapshot = tuple[SnapshotFamily, ...]


def snapshot(registry: CollectorRegistry = WORKER_REGISTRY) -> Snapshot:
    """The registry's counters and histograms as plain, picklable tuples (creation times left out: they are
    per process and cannot be added up)."""
    families = []
    for metric in registry.collect():
        samples = tuple(
            (s.name, tuple(sorted(s.labels.items())), float(s.value))
            for s in metric.samples
            if not s.name.endswith("_created")
        )
        families.append((metric.name, metric.type, metric.documentation, samples))
    return tuple(families)


def combine(snapshots: Iterable[Snapshot]) -> Snapshot:
    """The sum of several processes' snapshots: every worker metric is a counter or a histogram, so the
    fleet's value of a series is the sum of the processes' values."""
    heads: dict[str, tuple[str, str]] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for snap in snapshots:
        for name, typ, doc, samples in snap:
            heads.setdefault(name, (typ, doc))
            series = values.setdefault(name, {})
            for sample_name, labels, value in samples:
                key = (sample_name, labels)
                series[key] = series.get(key, 0.0) + value
    return tuple(
        (name, typ, doc, tuple((s, labels, v) for (s, labels), v in values[name].items()))
        for name, (typ, doc) in heads.items()
    )


def to_metrics(snap: Snapshot) -> list[Metric]:
    metrics = []
    for name, typ, doc, samples in snap:
        metric = Metric(name, doc, typ)
        for sample_name, labels, value in samples:
            metric.add_sample(sample_name, dict(labels), value)
        metrics.append(metric)
    return metrics


class SnapshotBoard:
    """The latest snapshot of each embedded worker (by slot), plus what the processes that went away counted:
    a restarted worker starts from zero, and the totals must not go down with it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: dict[int, tuple[int, Snapshot]] = {}
        self._retired: Snapshot = ()

    def update(self, slot: int, pid: int, snap: Snapshot) -> None:
        with self._lock:
            previous = self._current.get(slot)
            if previous is not None and previous[0] != pid:
                self._retired = combine([self._retired, previous[1]])
            self._current[slot] = (pid, snap)

    def snapshots(self) -> list[Snapshot]:
        with self._lock:
            return [self._retired, *(snap for _pid, snap in self._current.values())]


class WorkerMetrics(Collector):
    """The worker metrics of this process and of the processes ``sources`` report, as one set of families."""

    def __init__(self, sources: Sequence[Callable[[], Iterable[Snapshot]]] = ()) -> None:
        self._sources = sources

    def collect(self) -> Iterable[Metric]:
        snaps = [snapshot()]
        for source in self._sources:
            snaps.extend(source())
        return to_metrics(combine(snaps))


# --- the task table ----------------------------------------------------------------------------------------
class TaskCount(NamedTuple):
    """One group of the task table: how many tasks of a model (on its engine) are in a status, and the submit
    time (epoch ms) of the oldest of them."""

    status: str
    model: str
    engine: str
    tasks: int
    oldest_submit_ms: int | None


# What the store's counting method returns: TaskCount rows, or plain tuples in the same order.
TaskCountRow = tuple[str, str, str, int, int | None]


class TaskStats(Collector):
    """``videosynth_tasks``, ``videosynth_queue_depth`` and ``videosynth_queue_oldest_age_seconds``, from one
    count of the task table per scrape.

    ``known``: (model, engine) pairs shown at zero when they have no tasks, so a dashboard sees a 0 rather
    than no series; ``statuses``: the statuses shown so; ``pending``: the status that is the queue."""

    def __init__(
        self,
        counts: Callable[[], Iterable[TaskCountRow]],
        *,
        known: Iterable[tuple[str, str]] = (),
        statuses: Sequence[str] = (),
        pending: str = "PENDING",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._counts = counts
        self._known = tuple(known)
        self._statuses = tuple(statuses)
        self._pending = pending
        self._clock = clock

    def collect(self) -> Iterable[Metric]:
        try:
            rows = [TaskCount(*row) for row in self._counts()]
        except Exception as exc:  # noqa: BLE001 - a store outage must not take the other metrics down with it
            log.warning("task counts unavailable for /metrics: %s", exc)
            return []
        now_ms = self._clock() * 1000
        tasks = {(status, model): 0 for model, _engine in self._known for status in self._statuses}
        depth = {engine: 0 for _model, engine in self._known}
        oldest: dict[str, float] = {}
        for row in rows:
            tasks[(row.status, row.model)] = tasks.get((row.status, row.model), 0) + row.tasks
            if row.status != self._pending:
                continue
            depth[row.engine] = depth.get(row.engine, 0) + row.tasks
            if row.oldest_submit_ms is not None and row.tasks > 0:
                age = max(0.0, (now_ms - row.oldest_submit_ms) / 1000)
                oldest[row.engine] = max(oldest.get(row.engine, 0.0), age)
        by_status = GaugeMetricFamily(
            "videosynth_tasks", "Tasks in the task table, by status and model.", labels=["status", "model"]
        )
        for (status, model), count in sorted(tasks.items()):
            by_status.add_metric([status, model], count)
        queue = GaugeMetricFamily(
            "videosynth_queue_depth", "PENDING tasks waiting for a worker, by engine.", labels=["engine"]
        )
        age_family = GaugeMetricFamily(
            "videosynth_queue_oldest_age_seconds",
            "Seconds since the oldest PENDING task of each engine was submitted (0 when none waits).",
            labels=["engine"],
        )
        for engine, count in sorted(depth.items()):
            queue.add_metric([engine], count)
            age_family.add_metric([engine], oldest.get(engine, 0.0))
        return [by_status, queue, age_family]


# --- the HTTP API ------------------------------------------------------------------------------------------
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetrics(Collector):
    """``videosynth_http_requests_total`` and ``videosynth_http_request_duration_seconds`` of one app.

    Kept in plain dicts rather than prometheus_client's Counter and Histogram: those take a lock per value
    (three per request, about 2 us), which every poll would pay; this costs a third of that. It is only
    updated from the event loop's thread, one request at a time, so nothing is lost without a lock; a scrape
    (another thread) reads a copy."""

    def __init__(self, buckets: Sequence[float] = HTTP_BUCKETS) -> None:
        self._bounds = tuple(sorted(buckets))
        self._requests: dict[tuple[str, str, int], int] = {}
        # per (route, method): a count per bucket, one for +Inf, then the sum of seconds
        self._timing: dict[tuple[str, str], list[float]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        if method not in _METHODS:
            method = "other"  # any token is a method: unbounded label values otherwise
        key = (route, method, status)
        self._requests[key] = self._requests.get(key, 0) + 1
        timing = self._timing.get((route, method))
        if timing is None:
            timing = self._timing[(route, method)] = [0.0] * (len(self._bounds) + 2)
        timing[bisect.bisect_left(self._bounds, seconds)] += 1
        timing[-1] += seconds

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "videosynth_http_requests",
            "HTTP requests answered, by route template, method and status.",
            labels=["route", "method", "status"],
        )
        for (route, method, status), count in sorted(self._requests.copy().items()):
            requests.add_metric([route, method, str(status)], count)
        duration = HistogramMetricFamily(
            "videosynth_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route template and method.",
            labels=["route", "method"],
        )
        for (route, method), timing in sorted(self._timing.copy().items()):
            counts, total = list(timing[:-1]), timing[-1]
            cumulative = list(itertools.accumulate(counts))
            les = [repr(float(b)) for b in self._bounds] + ["+Inf"]  # as prometheus_client writes them
            duration.add_metric([route, method], list(zip(les, cumulative, strict=True)), sum_value=total)
        return [requests, duration]


def serve_registry(
    host: str, port: int, registry: CollectorRegistry = WORKER_REGISTRY, token: str | None = None
) -> http.server.ThreadingHTTPServer:
    """``GET /metrics`` of ``registry`` on its own port, in a daemon thread (a standalone worker has no API to
    answer scrapes); behind ``Authorization: Bearer <token>`` when a token is set. Returns the server, for
    its ``server_address`` and ``shutdown``."""
    expected = f"Bearer {token}".encode() if token else None

    class Scrape(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self._answer(404, b"not found\n", "text/plain")
            elif expected is not None and not hmac.compare_digest(
                self.headers.get("authorization", "").encode(), expected
            ):
                self._answer(401, b"a bearer token is required\n", "text/plain")
            else:
                self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return None  # scrapes every few seconds are not worth a log line each

    server = http.server.ThreadingHTTPServer((host, port), Scrape)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True).start()
    return server
