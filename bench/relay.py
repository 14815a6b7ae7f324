"""Relay benchmark: N tasks relayed at once through one worker process of A to a real upstream B.

Two real videosynth deployments on loopback (as tests/test_relay_e2e.py builds them): B runs the animatic
engine with ``--b-workers`` worker slots (720P, 5 s tasks unless told); A relays ``happyhorse-1.1-r2v`` to
B through a counting proxy and has one standalone worker process (one engine slot, and the relay pool).

1. Baseline: the N tasks submitted straight to B; wall time until all SUCCEEDED.
2. One task through A: the A worker's RSS with one upstream task in flight.
3. The same N tasks through A at once: A's RUNNING tasks (peak in flight), the A worker's RSS (peak),
   upstream polls per second (the proxy's count of GET /tasks/{id}), wall time until all SUCCEEDED.

It checks that every task SUCCEEDED on A and that B holds exactly one task per task of A (nothing
submitted twice), and prints the ratios relay/direct (wall time) and RSS at N / RSS at 1.

    .venv/bin/python bench/relay.py [--tasks 200] [--b-workers 2] [--resolution 720P] [--duration 5]
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py is named like the stdlib's queue, which concurrent.futures and requests import: our own
# directory goes from the import path before anything asks for it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import base64
import io
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

import requests
from PIL import Image

from relay_env import UPSTREAM_KEY_ENV, FaultProxy, Node
from videosynth.tasks.models import TaskFilter, TaskStatus

PROMPT = "[Image 1] walks through the rain toward [Image 2]; close-up on [Image 1]."
SUBMIT = "/api/v1/services/aigc/video-generation/video-synthesis"


def reference(seed: int) -> str:
    image = Image.new("RGB", (640, 480), ((seed * 70) % 256, 90, 160))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


PARAMETERS = {"resolution": "720P", "ratio": "16:9", "duration": 5, "watermark": False}


def body(model: str, i: int, refs: list[str]) -> dict:
    return {
        "model": model,
        "input": {"prompt": PROMPT, "media": [{"type": "reference_image", "url": u} for u in refs]},
        "parameters": {**PARAMETERS, "seed": i},
    }


def submit_all(node: Node, model: str, n: int, refs: list[str]) -> list[str]:
    """Submit ``n`` tasks from 8 client threads (so all are in at once), in order."""
    headers = {"Authorization": f"Bearer {node.key}", "X-DashScope-Async": "enable"}
    local = threading.local()

    def one(i: int) -> str:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        r = local.session.post(node.base_url + SUBMIT, json=body(model, i, refs), headers=headers, timeout=60)
        r.raise_for_status()
        return str(r.json()["output"]["task_id"])

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def counts(node: Node, ids: list[str]) -> dict[TaskStatus, int]:
    found: dict[TaskStatus, int] = {}
    for task in node.store.get_many(ids).values():
        found[task.status] = found.get(task.status, 0) + 1
    return found


def wait_all(node: Node, ids: list[str], timeout: float, sample: Callable[[], None] = lambda: None) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        sample()
        seen = counts(node, ids)
        if sum(v for k, v in seen.items() if k.is_terminal) == len(ids):
            bad = {k.value: v for k, v in seen.items() if k is not TaskStatus.SUCCEEDED}
            if bad:
                raise SystemExit(f"not every task SUCCEEDED: {bad}\n{node.logs()}")
            return time.monotonic() - start
        time.sleep(0.2)
    raise SystemExit(f"timed out: {counts(node, ids)}\n{node.logs()}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--b-workers", type=int, default=2)
    parser.add_argument("--resolution", default="720P")
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    PARAMETERS.update(resolution=args.resolution, duration=args.duration)
    n = args.tasks
    refs = [reference(1), reference(2)]

    with tempfile.TemporaryDirectory(prefix="bench-relay-") as tmp:
        root = Path(tmp)
        b = Node(root, "b")
        proxy = FaultProxy(b.port)
        models = root / "a-models.toml"
        # The hosted service suggests polling every 15 s; a bench of 3 s renders polls faster, so the figure
        # below is a rate at this schedule, which scales inversely with poll_max_s.
        models.write_text(
            f'[models."happyhorse-1.1-r2v"]\nengine = "dashscope"\n'
            f'base_url = "http://127.0.0.1:{proxy.port}/api/v1"\napi_key_env = "{UPSTREAM_KEY_ENV}"\n'
            'poll_first_s = 1.0\npoll_max_s = 3.0\nresult_hosts = "127.0.0.1"\n',
            encoding="utf-8",
        )
        a = Node(root, "a", {"VIDEOSYNTH_MODELS_FILE": str(models), UPSTREAM_KEY_ENV: b.key})
        try:
            b.serve(workers=args.b_workers)
            a.serve(workers=0)
            worker = a.worker()

            # 1. Baseline: straight to B.
            direct_ids = submit_all(b, "happyhorse-1.1-r2v", n, refs)
            direct_s = wait_all(b, direct_ids, args.timeout)
            print(f"direct to B: {n} tasks in {direct_s:.1f} s", flush=True)

            # 2. One task in flight through A.
            one = submit_all(a, "happyhorse-1.1-r2v", 1, refs)
            while counts(a, one).get(TaskStatus.RUNNING, 0) == 0 and not counts(a, one).get(
                TaskStatus.SUCCEEDED
            ):
                time.sleep(0.05)
            time.sleep(1.0)
            rss_one = rss_kb(worker.pid)
            wait_all(a, one, args.timeout)

            # 3. N at once through A.
            peak = {"running": 0, "rss": 0}
            stop = threading.Event()

            def sample() -> None:
                peak["rss"] = max(peak["rss"], rss_kb(worker.pid))

            def watch_running(ids: list[str]) -> None:
                while not stop.is_set():
                    peak["running"] = max(peak["running"], counts(a, ids).get(TaskStatus.RUNNING, 0))
                    stop.wait(0.2)

            seen_before = sum(proxy.seen.values())
            submits_before = proxy.submits_forwarded
            start = time.monotonic()
            relay_ids = submit_all(a, "happyhorse-1.1-r2v", n, refs)
            watcher = threading.Thread(target=watch_running, args=(relay_ids,), daemon=True)
            watcher.start()
            relay_s = (time.monotonic() - start) + wait_all(a, relay_ids, args.timeout, sample)
            stop.set()
            watcher.join()
            requests_seen = sum(proxy.seen.values()) - seen_before
            submits = proxy.submits_forwarded - submits_before
            polls = requests_seen - submits
            b_total, _ = b.store.list(b.store.list_keys()[0].account_id, TaskFilter(), 0, 1)
            print(f"through A: {n} tasks in {relay_s:.1f} s", flush=True)
            print(f"peak tasks in flight in A's one worker: {peak['running']}")
            print(
                f"A worker RSS: {rss_one / 1024:.0f} MiB at 1 in flight, {peak['rss'] / 1024:.0f} MiB at peak"
            )
            print(
                f"upstream submits: {submits} (tasks: {n}); upstream polls: {polls}, {polls / relay_s:.1f}/s"
            )
            print(f"B holds {b_total} tasks for {2 * n + 1} submitted to A and to B")
            print(f"ratio relay/direct wall time: {relay_s / direct_s:.2f}")
            print(f"ratio RSS at peak / RSS at 1: {peak['rss'] / rss_one:.2f}")
            if submits != n or b_total != 2 * n + 1:
                raise SystemExit(f"{submits} upstream submits for {n} tasks; B holds {b_total}")
        finally:
            a.stop()
            b.stop()
            proxy.stop()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # 200 submits at once, and a relay that submits and polls as fast as its upstream allows: the per-client
    # limits (5 submits/s, 20 queries/s, 500 queued) of both deployments are not what this measures.
    for name in (
        "VIDEOSYNTH_SUBMIT_RPS",
        "VIDEOSYNTH_QUERY_RPS",
        "VIDEOSYNTH_MAX_QUEUED",
        "VIDEOSYNTH_MAX_STORED_MB",
    ):
        os.environ.setdefault(name, "0")
    main()
