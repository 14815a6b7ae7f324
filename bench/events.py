"""What recording events costs the queue: claim + finish pairs per second with schema 8's event trigger (and
the deliveries it writes) against the same schema with the trigger dropped, in the same process.

A store is made three ways from scratch in temporary space: the trigger dropped (the baseline: what schema 7
did per status change), the trigger with no webhooks, and the trigger with two webhooks per account (each
event also writes two delivery rows). Each
holds the same backlog of tasks over several accounts; one thread claims and finishes them as fast as it can
(``claim`` then ``succeed``: two status changes, so two events per task). Rounds alternate between the
variants (the machine drifts by tens of per cent within minutes) and the ratio printed is the median of the
per-round ratios against the baseline.

    .venv/bin/python bench/events.py                         # SQLite, 5 rounds of 2000 tasks
    .venv/bin/python bench/events.py --store postgres        # a throwaway PostgreSQL 15 cluster, as the tests
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py shadows the stdlib `queue` for scripts run from this directory: drop it from the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import contextlib
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator

from videosynth.tasks import postgres, sqlite
from videosynth.tasks.models import ALL_EVENT_KINDS, GenerationParams, NewTask, Webhook
from videosynth.tasks.sqlstore import SqlTaskStore

PARAMS = GenerationParams(
    resolution="720P", ratio="16:9", duration=5, seed=1, watermark=False, width=1280, height=720
)
ACCOUNTS = 10
BASELINE = "no event trigger"


def tasks(n: int) -> list[NewTask]:
    now = int(time.time() * 1000)
    return [
        NewTask(
            task_id=str(uuid.uuid4()),
            account_id=f"acct-{i % ACCOUNTS}",
            api_key_id=f"key-{i % ACCOUNTS}",
            request_id=str(uuid.uuid4()),
            model="happyhorse-1.1-r2v",
            engine="animatic",
            prompt="[Image 1] walks",
            media_urls=("https://img.test/1.png",),
            params=PARAMS,
            submit_time_ms=now + i,
        )
        for i in range(n)
    ]


def run_round(store: SqlTaskStore, n: int) -> float:
    """Claim and finish ``n`` tasks; pairs per second."""
    store.create_many(tasks(n))
    started = time.perf_counter()
    done = 0
    while (task := store.claim("bench", int(time.time() * 1000), 60_000)) is not None:
        store.succeed(task.task_id, "bench", int(time.time() * 1000), "results/x.mp4", 5000)
        done += 1
    elapsed = time.perf_counter() - started
    assert done == n, done
    return n / elapsed


@contextlib.contextmanager
def stores(kind: str, root: Path) -> Iterator[dict[str, Callable[[], SqlTaskStore]]]:
    made: list[SqlTaskStore] = []
    cluster = None
    if kind == "postgres":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from services import PostgresCluster, fresh_database

        cluster = PostgresCluster()
        cluster.start()

    def make(name: str, trigger: bool, hooks: int) -> Callable[[], SqlTaskStore]:
        def build() -> SqlTaskStore:
            store: SqlTaskStore
            if kind == "postgres":
                assert cluster is not None
                store = postgres.PostgresTaskStore(fresh_database(cluster))
            else:
                store = sqlite.SqliteTaskStore(root / f"{name}-{uuid.uuid4().hex}.db")
            store.migrate()
            if not trigger:
                with store._transaction() as conn:
                    store._execute(
                        conn, "DROP TRIGGER tasks_events" + (" ON tasks" if kind == "postgres" else "")
                    )
            for a in range(ACCOUNTS):
                for h in range(hooks):
                    store.add_webhook(
                        Webhook(
                            webhook_id=f"wh_{a}_{h}",
                            account_id=f"acct-{a}",
                            url="https://hooks.example.com/x",
                            events=ALL_EVENT_KINDS,
                            format="standard",
                            include_result=True,
                            created_ms=0,
                        )
                    )
            made.append(store)
            return store

        return build

    try:
        yield {
            BASELINE: make("bare", False, 0),
            "events, no webhooks": make("events", True, 0),
            "events, 2 webhooks/account": make("hooks", True, 2),
        }
    finally:
        for s in made:
            s.close()
        if cluster is not None:
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=2000)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="videosynth-bench-events-") as tmp,
        stores(args.store, Path(tmp)) as made,
    ):
        built = {name: build() for name, build in made.items()}
        for store in built.values():
            run_round(store, 200)  # warm-up: plans, caches, file growth
        rates: dict[str, list[float]] = {name: [] for name in built}
        for _ in range(args.rounds):
            for name, store in built.items():
                rates[name].append(run_round(store, args.tasks))
        base = rates[BASELINE]
        print(
            f"store: {args.store}; {args.rounds} rounds of {args.tasks} claim+succeed pairs, {ACCOUNTS} accounts"
        )
        for name, got in rates.items():
            ratio = statistics.median(g / b for g, b in zip(got, base, strict=True))
            print(f"  {name:30s} {statistics.median(got):8.0f} pairs/s   ratio to no trigger: {ratio:.2f}")


if __name__ == "__main__":
    main()
