"""How fast a cancel of a RUNNING task lands: the README promises within a second on the animatic engine.

Runs `videosynth serve` (SQLite, one embedded worker) on loopback; per run it submits a 1080P 15 s task, waits
until it is RUNNING and has rendered for ``--after`` seconds, cancels it, and reads the server's CANCELED
commit time (``end_time``). The baseline in the same run is the same task left to finish: the cancel lands in
a small fraction of the time the render alone would still have taken. Prints each latency, the median, the
worst, and the ratio to the uncanceled render.

    .venv/bin/python bench/cancel.py [--runs 10] [--after 0.5]
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py shadows the stdlib `queue` for scripts run from this directory: drop it from the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import http.server
import importlib.util
import os
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime

import requests

_spec = importlib.util.spec_from_file_location("bench_engine", Path(__file__).with_name("engine.py"))
assert _spec is not None and _spec.loader is not None
_engine = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_engine)
SUBMIT, free_port, photo_like = _engine.SUBMIT, _engine.free_port, _engine.photo_like


def wire_epoch(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--after", type=float, default=0.5, help="seconds of rendering before the cancel")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="videosynth-bench-cancel-") as tmp_name:
        tmp = Path(tmp_name)
        www = tmp / "www"
        www.mkdir()
        for i in range(3):
            photo_like(www / f"ref{i + 1}.jpg", seed=i + 1)

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **k):  # type: ignore[no-untyped-def]
                super().__init__(*a, directory=str(www), **k)

            def log_message(self, *a):  # type: ignore[no-untyped-def]
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        img_base = f"http://127.0.0.1:{httpd.server_address[1]}"
        port, key = free_port(), "sk-bench-" + os.urandom(8).hex()
        env = {
            **os.environ,
            "VIDEOSYNTH_DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite'}",
            "VIDEOSYNTH_STORAGE_URL": f"file://{tmp / 'storage'}",
            "VIDEOSYNTH_WORK_DIR": str(tmp / "work"),
            "VIDEOSYNTH_API_KEYS": key,
            "VIDEOSYNTH_MEDIA_ALLOW_PRIVATE": "1",
            "VIDEOSYNTH_TIMEZONE": "UTC",
            # Polled faster than a client's 20 queries/s: the per-client limits are not what this measures.
            "VIDEOSYNTH_QUERY_RPS": "0",
            "VIDEOSYNTH_SUBMIT_RPS": "0",
        }
        log = open(tmp / "server.log", "wb")  # noqa: SIM115 - the server process writes it until it exits
        server = subprocess.Popen(
            [sys.executable, "-m", "videosynth", "serve", "--port", str(port), "--log-level", "warning"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {key}", "X-DashScope-Async": "enable"}
        body = {
            "model": "happyhorse-1.1-r2v",
            "input": {
                "prompt": "[Image 1] close-up, push in. [Image 2] wide shot, pan left. [Image 3] 特写，拉远。",
                "media": [{"type": "reference_image", "url": f"{img_base}/ref{i + 1}.jpg"} for i in range(3)],
            },
            "parameters": {"resolution": "1080P", "ratio": "16:9", "duration": 15, "seed": 1},
        }

        def poll(task_id: str) -> dict:  # type: ignore[type-arg]
            out: dict = requests.get(f"{base}/api/v1/tasks/{task_id}", headers=headers, timeout=30).json()[
                "output"
            ]  # type: ignore[type-arg]
            return out

        def submit() -> str:
            r = requests.post(base + SUBMIT, json=body, headers=headers, timeout=30)
            r.raise_for_status()
            return str(r.json()["output"]["task_id"])

        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if requests.get(base + "/healthz", timeout=1).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("server did not start")
                time.sleep(0.1)
            time.sleep(3)  # the worker and its engine process finish starting

            task_id = submit()
            while (out := poll(task_id))["task_status"] in ("PENDING", "RUNNING"):
                time.sleep(0.05)
            render_s = wire_epoch(out["end_time"]) - wire_epoch(out["scheduled_time"])

            latencies = []
            for _ in range(args.runs):
                task_id = submit()
                while poll(task_id)["task_status"] != "RUNNING":
                    time.sleep(0.02)
                time.sleep(args.after)
                sent = time.time()
                requests.post(
                    f"{base}/api/v1/tasks/{task_id}/cancel", headers=headers, timeout=30
                ).raise_for_status()
                while (out := poll(task_id))["task_status"] == "RUNNING":
                    time.sleep(0.02)
                if out["task_status"] != "CANCELED":
                    raise SystemExit(f"task ended {out['task_status']}, not CANCELED")
                latencies.append(wire_epoch(out["end_time"]) - sent)
        finally:
            server.terminate()
            server.wait(60)
            httpd.shutdown()
        print(f"machine: {os.cpu_count()} cores; 1080P 15 s task, cancel {args.after:g} s after RUNNING")
        print(f"uncanceled render (baseline): {render_s:.2f} s")
        print("cancel -> CANCELED commit, s: " + " ".join(f"{x:.2f}" for x in latencies))
        median, worst = statistics.median(latencies), max(latencies)
        print(f"median {median:.2f} s, worst {worst:.2f} s; median / render {median / render_s:.3f}")


if __name__ == "__main__":
    main()
