"""Queue benchmark: claims per second with 1, 2 and 4 worker processes, on SQLite and on PostgreSQL.

Each run fills the tasks table with PENDING tasks, then N spawned processes (each with its own store
connection, like real workers) claim and complete tasks until the queue is empty. The script checks
that no task was claimed twice and that every task was claimed, and prints claims/s per run and the
4-workers / 1-worker scaling ratio per store. PostgreSQL is a throwaway cluster started from the local
server binaries (as the tests do), on 127.0.0.1.

    .venv/bin/python bench/queue.py [--tasks 4000]
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the stdlib's `queue`, which multiprocessing imports: take our own directory
# off the import path before anything asks for it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import multiprocessing
import queue
import tempfile
import time
import uuid
from collections import Counter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from videosynth.settings import Settings
from videosynth.tasks.models import GenerationParams, NewTask
from videosynth.wiring import build_store

PARAMS = GenerationParams(
    resolution="720P", ratio="16:9", duration=5, seed=1, watermark=True, width=1280, height=720
)


def fill(url: str, n: int) -> None:
    store = build_store(Settings(database_url=url))
    store.migrate()
    for i in range(n):
        store.create(
            NewTask(
                task_id=str(uuid.uuid4()),
                account_id=f"acct-{i % 50}",  # 50 accounts, so the fair-share limit does not bind
                api_key_id="k",
                request_id="r",
                model="happyhorse-1.1-r2v",
                engine="animatic",
                prompt="[Image 1]",
                media_urls=("https://img.test/a.png",),
                params=PARAMS,
                submit_time_ms=i,
            )
        )
    store.close()


def work(url: str, name: str, start: multiprocessing.synchronize.Event, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = build_store(Settings(database_url=url))
    claimed = []
    start.wait()
    t0 = time.perf_counter()
    while True:
        now = int(time.time() * 1000)
        task = store.claim(name, now, 60_000, max_running_per_account=5)
        if task is None:
            break
        claimed.append(task.task_id)
        store.succeed(task.task_id, name, now, f"results/{task.task_id}.mp4", 0)
    out.put((name, claimed, t0, time.perf_counter()))
    store.close()


def run(url: str, workers: int, tasks: int) -> tuple[float, int]:
    fill(url, tasks)
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=work, args=(url, f"w{i}", start, out)) for i in range(workers)]
    for p in procs:
        p.start()
    time.sleep(1.0)  # let every process import and connect before the clock starts
    start.set()
    results = []
    while len(results) < len(procs):
        try:
            results.append(out.get(timeout=1.0))
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in procs):
                raise SystemExit("a worker process failed; see its traceback above") from None
    for p in procs:
        p.join()
    ids = [i for _, claimed, _, _ in results for i in claimed]
    doubles = sum(c - 1 for c in Counter(ids).values() if c > 1)
    if len(set(ids)) != tasks:
        raise SystemExit(f"lost tasks: claimed {len(set(ids))} of {tasks}")
    elapsed = max(e for *_, e in results) - min(s for _, _, s, _ in results)
    return tasks / elapsed, doubles


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=4000)
    args = parser.parse_args()
    from services import PostgresCluster, fresh_database

    cluster = PostgresCluster()
    cluster.start()
    print(
        f"{'store':10} {'workers':>7} {'claims/s':>9} {'double claims':>13}  (claim + complete, {args.tasks} tasks)"
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for store_name in ("sqlite", "postgres"):
                rates = {}
                for n in (1, 2, 4):
                    url = (
                        f"sqlite:///{Path(tmp) / f'q{n}.db'}"
                        if store_name == "sqlite"
                        else fresh_database(cluster)
                    )
                    rate, doubles = run(url, n, args.tasks)
                    rates[n] = rate
                    print(f"{store_name:10} {n:7d} {rate:9.0f} {doubles:13d}")
                    if doubles:
                        raise SystemExit("double claims!")
                print(f"{store_name:10} scaling 4 workers / 1 worker: {rates[4] / rates[1]:.2f}")
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
