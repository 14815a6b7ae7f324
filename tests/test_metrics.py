"""GET /metrics: the HTTP, worker and task-table families move as a task goes through a real server, the
embedded workers of `videosynth serve` report theirs to the API process, and a token guards the endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conftest import SUBMIT_PATH, ImageServer, LiveServer, free_socket, serving, write_image
from test_end_to_end import r2v_body
from videosynth.api.app import create_app
from videosynth.apikeys import new_api_key
from videosynth.catalog import Catalog
from videosynth.observability.metrics import (
    WORKER_REGISTRY,
    Snapshot,
    SnapshotBoard,
    WorkerMetrics,
    combine,
)
from videosynth.settings import Settings
from videosynth.tasks.sqlite import SqliteTaskStore
from videosynth.wiring import build_storage, build_store
from videosynth.worker.loop import Worker

QUERY_ROUTE = "/api/v1/tasks/{task_id}"
FAMILIES = {
    "videosynth_http_requests",
    "videosynth_http_request_duration_seconds",
    "videosynth_tasks",
    "videosynth_queue_depth",
    "videosynth_queue_oldest_age_seconds",
    "videosynth_worker_heartbeats",
    "videosynth_engine_restarts",
    "videosynth_task_stage_duration_seconds",
    "videosynth_tasks_finished",
    "videosynth_relay_upstream_requests",
}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[set[str], Samples]:
    families, samples = set(), {}
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return families, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(base_url: str, token: str | None = None) -> tuple[set[str], Samples]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = requests.get(base_url + "/metrics", headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


@contextmanager
def worker_thread(server: LiveServer, catalog: Catalog) -> Iterator[Worker]:
    store = build_store(server.settings)
    w = Worker(settings=server.settings, store=store, storage=server.storage, catalog=catalog)
    stop = threading.Event()
    thread = threading.Thread(target=w.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield w
    finally:
        stop.set()
        thread.join(60)
        store.close()


def test_a_task_moves_every_family(
    live_server: LiveServer, image_server: ImageServer, catalog: Catalog
) -> None:
    write_image(image_server.root / "a.png", 800, 600, seed=1)
    model = "happyhorse-1.0-r2v"
    _, before = scrape(live_server.base_url)
    task_id = live_server.submit(r2v_body([image_server.url("a.png")], duration=5)).json()["output"][
        "task_id"
    ]
    assert requests.get(live_server.base_url + "/no/such/path", timeout=10).status_code == 404

    # No worker yet: the task waits, and the queue says so.
    time.sleep(0.3)
    families, queued = scrape(live_server.base_url)
    assert families >= FAMILIES, FAMILIES - families
    assert value(queued, "videosynth_queue_depth", engine="animatic") == 1
    assert value(queued, "videosynth_queue_oldest_age_seconds", engine="animatic") >= 0.2
    assert value(queued, "videosynth_tasks", status="PENDING", model=model) == 1

    with worker_thread(live_server, catalog):
        polls = 0
        deadline = time.monotonic() + 120
        while live_server.query(task_id)["output"]["task_status"] != "SUCCEEDED":
            polls += 1
            assert time.monotonic() < deadline, "the task did not finish"
            time.sleep(0.1)
        polls += 1
        _, after = scrape(live_server.base_url)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # HTTP: by route template, never by raw path.
    assert moved("videosynth_http_requests_total", route=SUBMIT_PATH, method="POST", status="200") == 1
    assert moved("videosynth_http_requests_total", route=QUERY_ROUTE, method="GET", status="200") == polls
    assert moved("videosynth_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert moved("videosynth_http_requests_total", route="/metrics", method="GET", status="200") >= 2
    assert moved("videosynth_http_request_duration_seconds_count", route=QUERY_ROUTE, method="GET") == polls
    assert not any(task_id in str(labels) for _name, labels in after)
    # The task table, at scrape time.
    assert value(after, "videosynth_tasks", status="SUCCEEDED", model=model) == 1
    assert value(after, "videosynth_tasks", status="PENDING", model=model) == 0
    assert value(after, "videosynth_queue_depth", engine="animatic") == 0
    assert value(after, "videosynth_queue_oldest_age_seconds", engine="animatic") == 0
    # The worker (in this process: the collector reads this process's registry).
    assert moved("videosynth_worker_heartbeats_total") >= 1
    assert moved("videosynth_tasks_finished_total", engine="animatic", status="SUCCEEDED") == 1
    for stage in ("fetching", "rendering", "storing"):
        count = "videosynth_task_stage_duration_seconds_count"
        assert moved(count, engine="animatic", stage=stage) == 1, stage
        assert moved("videosynth_task_stage_duration_seconds_sum", engine="animatic", stage=stage) > 0
    inf = moved(
        "videosynth_task_stage_duration_seconds_bucket", engine="animatic", stage="rendering", le="+Inf"
    )
    assert inf == 1


def test_a_token_guards_the_endpoint(settings: Settings, store: SqliteTaskStore, catalog: Catalog) -> None:
    token = "metrics-" + new_api_key()[3:]
    settings = settings.replace(metrics_token=token)
    app = create_app(settings=settings, store=store, storage=build_storage(settings, store), catalog=catalog)
    with serving(app) as base_url:
        assert requests.get(base_url + "/metrics", timeout=10).status_code == 401
        wrong = requests.get(base_url + "/metrics", headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
        assert (
            requests.get(base_url + "/metrics", headers={"Authorization": token}, timeout=10).status_code
            == 401
        )
        families, samples = scrape(base_url, token)
        assert "videosynth_http_requests" in families
        assert (
            value(samples, "videosynth_http_requests_total", route="/metrics", method="GET", status="401")
            == 3
        )
        # Everything else is unaffected by the token.
        assert requests.get(base_url + "/healthz", timeout=10).status_code == 200


def test_counts_of_a_restarted_worker_are_kept() -> None:
    def heartbeats(n: float) -> Snapshot:
        return (
            (
                "videosynth_worker_heartbeats",
                "counter",
                "help",
                (("videosynth_worker_heartbeats_total", (), n),),
            ),
        )

    board = SnapshotBoard()
    board.update(0, 100, heartbeats(5))
    board.update(1, 200, heartbeats(2))
    board.update(0, 100, heartbeats(7))  # the same process, later: its new count replaces the old one
    board.update(0, 101, heartbeats(1))  # slot 0 restarted from zero: the old process's 7 stay counted
    assert combine(board.snapshots()) == heartbeats(7 + 2 + 1)
    # Served with this process's own worker metrics, as one family per name.
    names = [m.name for m in WorkerMetrics([board.snapshots]).collect()]
    assert len(names) == len(set(names)) and "videosynth_worker_heartbeats" in names


def test_embedded_workers_report_to_the_api_process(tmp_path: Path, image_server: ImageServer) -> None:
    """`videosynth serve` with one embedded worker: the worker's counts reach the API's /metrics through the
    report queue, and every log line of both processes is a JSON object (stderr is a file, not a terminal)."""
    write_image(image_server.root / "a.png", 800, 600, seed=2)
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    key = new_api_key()
    env = {
        **os.environ,
        "VIDEOSYNTH_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "VIDEOSYNTH_STORAGE_URL": f"file://{tmp_path / 'storage'}",
        "VIDEOSYNTH_WORK_DIR": str(tmp_path / "work"),
        "VIDEOSYNTH_MEDIA_ALLOW_PRIVATE": "1",
        "VIDEOSYNTH_API_KEYS": key,
        "VIDEOSYNTH_WORKERS": "1",
    }
    env.pop("VIDEOSYNTH_LOG_FORMAT", None)
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "videosynth", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,  # the banner shows the key: not a log line, and not kept
            stderr=log,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            try:
                if requests.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        headers = {"Authorization": f"Bearer {key}", "X-DashScope-Async": "enable"}
        body = r2v_body([image_server.url("a.png")], duration=5)
        task_id = requests.post(base + SUBMIT_PATH, json=body, headers=headers, timeout=30).json()["output"][
            "task_id"
        ]
        while True:
            assert time.monotonic() < deadline + 60, log_path.read_text()
            out = requests.get(f"{base}/api/v1/tasks/{task_id}", headers=headers, timeout=30).json()["output"]
            if out["task_status"] not in ("PENDING", "RUNNING"):
                break
            time.sleep(0.2)
        assert out["task_status"] == "SUCCEEDED", out
        # The worker reports its counts once a second.
        while True:
            _, samples = scrape(base)
            if value(samples, "videosynth_tasks_finished_total", engine="animatic", status="SUCCEEDED") == 1:
                break
            assert time.monotonic() < deadline + 70, "the worker's counts never reached /metrics"
            time.sleep(0.2)
        assert value(samples, "videosynth_worker_heartbeats_total") >= 1
        for stage in ("fetching", "rendering", "storing"):
            count = "videosynth_task_stage_duration_seconds_count"
            assert value(samples, count, engine="animatic", stage=stage) == 1, stage
        assert (
            value(samples, "videosynth_http_requests_total", route=SUBMIT_PATH, method="POST", status="200")
            == 1
        )
    finally:
        proc.terminate()
        proc.wait(60)
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line: one JSON object
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records), records
    done = [r for r in records if "SUCCEEDED" in r["message"]]
    assert done and all(r.get("task_id") == task_id for r in done), records


def test_relay_calls_are_counted_by_operation_and_outcome() -> None:
    from videosynth.errors import SubmitAnswerLost, UpstreamRefused, UpstreamThrottled, UpstreamUnavailable
    from videosynth.worker.relay import upstream_call

    def counted() -> Samples:
        return parse(generate_latest(WORKER_REGISTRY).decode())[1]

    def failing(exc: Exception) -> Callable[[], str]:
        def call() -> str:
            raise exc

        return call

    before = counted()
    assert upstream_call("status", lambda: "ok") == "ok"
    for exc, operation in [
        (UpstreamThrottled("429"), "submit"),
        (SubmitAnswerLost("reset"), "submit"),
        (UpstreamUnavailable("503"), "status"),
        (UpstreamRefused("400"), "submit"),
        (RuntimeError("bug"), "download"),
    ]:
        with pytest.raises(type(exc)):
            upstream_call(operation, failing(exc))
    after = counted()
    name = "videosynth_relay_upstream_requests_total"
    for operation, outcome in [
        ("status", "ok"),
        ("submit", "throttled"),
        ("submit", "answer_lost"),
        ("status", "unavailable"),
        ("submit", "refused"),
        ("download", "error"),
    ]:
        labels = {"operation": operation, "outcome": outcome}
        assert value(after, name, **labels) - value(before, name, **labels) == 1, labels


def test_a_standalone_worker_serves_its_own_metrics(
    live_server: LiveServer, image_server: ImageServer, tmp_path: Path
) -> None:
    """At scale workers run apart from the API (`videosynth worker`): each serves its counts on its own port."""
    write_image(image_server.root / "a.png", 800, 600, seed=4)
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    settings = live_server.settings
    env = {
        **os.environ,
        "VIDEOSYNTH_DATABASE_URL": settings.database_url,
        "VIDEOSYNTH_STORAGE_URL": settings.storage_url,
        "VIDEOSYNTH_WORK_DIR": str(tmp_path / "worker"),
        "VIDEOSYNTH_MEDIA_ALLOW_PRIVATE": "1",
        "VIDEOSYNTH_WORKER_METRICS_LISTEN": f"127.0.0.1:{port}",
        "VIDEOSYNTH_METRICS_TOKEN": "scrape-me",
    }
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "videosynth", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            try:
                assert requests.get(url, timeout=1).status_code == 401  # the token guards it here too
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        task_id = live_server.submit(r2v_body([image_server.url("a.png")], duration=3)).json()["output"][
            "task_id"
        ]
        assert live_server.wait(task_id)["output"]["task_status"] == "SUCCEEDED"
        r = requests.get(url, headers={"Authorization": "Bearer scrape-me"}, timeout=5)
        assert r.status_code == 200
        families, samples = parse(r.text)
        assert {
            "videosynth_tasks_finished",
            "videosynth_worker_heartbeats",
            "videosynth_engine_restarts",
        } <= families
        assert value(samples, "videosynth_tasks_finished_total", engine="animatic", status="SUCCEEDED") == 1
        assert (
            value(samples, "videosynth_task_stage_duration_seconds_count", engine="animatic", stage="storing")
            == 1
        )
        assert requests.get(url.replace("/metrics", "/other"), timeout=5).status_code == 404
    finally:
        proc.terminate()
        proc.wait(60)
