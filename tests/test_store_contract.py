"""One contract for every TaskStore implementation (the queue is the table)."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from videosynth.errors import ErrorKind, IdempotencyConflict, QueueFull
from videosynth.tasks.models import (
    ALL_EVENT_KINDS,
    CancelOutcome,
    DeliveryAttempt,
    DeliveryState,
    EventKind,
    GenerationParams,
    Lease,
    Limits,
    NewTask,
    QueueCap,
    Stage,
    StoredInput,
    Task,
    TaskFilter,
    TaskStatus,
    Webhook,
)
from videosynth.tasks.sqlite import SqliteTaskStore
from videosynth.tasks.store import TaskStore

PARAMS = GenerationParams(
    resolution="720P", ratio="16:9", duration=5, seed=1, watermark=True, width=1280, height=720
)
LEASE = 30_000


@pytest.fixture(params=["sqlite", "postgres"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], TaskStore]]:
    """Makes independent connections to one store, as separate processes would have."""
    made: list[TaskStore] = []
    if request.param == "postgres":
        from videosynth.tasks.postgres import PostgresTaskStore

        url = request.getfixturevalue("pg_url")

    def make() -> TaskStore:
        s: TaskStore = (
            PostgresTaskStore(url)
            if request.param == "postgres"
            else SqliteTaskStore(tmp_path / "contract.db")
        )
        made.append(s)
        return s

    make().migrate()
    yield make
    for s in made:
        s.close()


@pytest.fixture
def store(store_factory: Callable[[], TaskStore]) -> TaskStore:
    return store_factory()


def new_task(
    t: int,
    account: str = "acct-1",
    model: str = "happyhorse-1.1-r2v",
    media: int = 2,
    engine: str = "animatic",
) -> NewTask:
    return NewTask(
        task_id=str(uuid.uuid4()),
        account_id=account,
        api_key_id="key-1",
        request_id=str(uuid.uuid4()),
        model=model,
        engine=engine,
        prompt="[Image 1] walks",
        media_urls=tuple(f"https://img.test/{i}.png" for i in range(media)),
        params=PARAMS,
        submit_time_ms=t,
    )


def test_migrate_is_idempotent(store: TaskStore) -> None:
    assert store.migrate() == store.migrate()


def test_create_get_and_claim_roundtrip(store: TaskStore) -> None:
    task = new_task(1000, media=3)
    store.create(task)
    got = store.get(task.task_id)
    assert got is not None
    assert got.status is TaskStatus.PENDING and got.params == PARAMS and got.prompt == task.prompt
    assert store.get("missing") is None
    claimed = store.claim("w1", 2000, LEASE)
    assert claimed is not None and claimed.task_id == task.task_id
    assert claimed.status is TaskStatus.RUNNING and claimed.worker_id == "w1" and claimed.attempts == 1
    assert claimed.media_urls == task.media_urls
    assert claimed.scheduled_time_ms == 2000
    assert store.claim("w2", 2000, LEASE) is None


def test_get_many_reads_what_get_reads(store: TaskStore) -> None:
    tasks = [new_task(1000 + i) for i in range(3)]
    store.create_many(tasks)
    store.claim("w1", 2000, LEASE)
    ids = [t.task_id for t in tasks]
    # Duplicates and unknown ids are asked for as a burst of polls would ask for them.
    found = store.get_many([*ids, ids[0], "missing"])
    assert set(found) == set(ids)
    for task_id in ids:
        assert found[task_id] == store.get(task_id)
    assert store.get_many([]) == {}
    many = [new_task(5000 + i) for i in range(1200)]
    store.create_many(many)
    assert len(store.get_many([t.task_id for t in many])) == 1200


def test_create_many_is_all_or_nothing_and_wakes_workers(store_factory: Callable[[], TaskStore]) -> None:
    store = store_factory()
    kept = new_task(1000, media=3)
    store.create(kept)
    batch = [new_task(2000, media=0), new_task(2001, media=9), kept]  # the last one is a duplicate id
    with pytest.raises(Exception):  # noqa: B017 - each store raises its driver's integrity error
        store.create_many(batch)
    assert store.get(batch[0].task_id) is None and store.get(batch[1].task_id) is None
    assert store.get_many([kept.task_id])[kept.task_id].media_urls == ()  # polls never read media
    fresh = batch[:2]
    assert _wakes(store_factory(), lambda: store.create_many(fresh))
    claimed = {c.task_id: c for c in (store.claim("w1", 3000, LEASE) for _ in range(3)) if c}
    assert {t: c.media_urls for t, c in claimed.items()} == {t.task_id: t.media_urls for t in (kept, *fresh)}


def test_claim_is_fifo_and_filters_models(store: TaskStore) -> None:
    a, b, c = new_task(3), new_task(1, model="other"), new_task(2)
    for t in (a, b, c):
        store.create(t)
    first = store.claim("w", 10, LEASE, models=["happyhorse-1.1-r2v"])
    second = store.claim("w", 10, LEASE, models=["happyhorse-1.1-r2v"])
    assert first is not None and second is not None
    assert (first.task_id, second.task_id) == (c.task_id, a.task_id)
    assert store.claim("w", 10, LEASE, models=["happyhorse-1.1-r2v"]) is None
    assert store.claim("w", 10, LEASE, models=[]) is None
    last = store.claim("w", 10, LEASE)
    assert last is not None and last.task_id == b.task_id


def test_tasks_ahead_predicts_the_order_claim_starts_them_in(store: TaskStore) -> None:
    # Account b was served before (it is last in the first round); a and c never were, and take their
    # turns in account order. Another engine's task is a different pool and never counts.
    earlier = new_task(0, account="b")
    store.create(earlier)
    served = store.claim("w", 100, LEASE)
    assert served is not None and store.succeed(served.task_id, "w", 110, "results/x.mp4", 3000)
    queued = [
        new_task(1, account="a"), new_task(2, account="a"), new_task(3, account="a"),
        new_task(4, account="b"), new_task(5, account="b"), new_task(6, account="c"),
    ]  # fmt: skip
    other_pool = new_task(0, account="c", engine="wan-vace")
    for t in (*queued, other_pool):
        store.create(t)
    predicted = {t.task_id: store.tasks_ahead(store_task(store, t.task_id)) for t in queued}
    started: list[str] = []
    for now in range(200, 200 + 10 * len(queued), 10):
        task = store.claim("w", now, LEASE, engines=["animatic"])
        assert task is not None
        assert store.tasks_ahead(task) is None  # RUNNING: no longer queued
        assert store.succeed(task.task_id, "w", now + 5, f"results/{task.task_id}.mp4", 3000)
        started.append(task.task_id)
    assert {started[n]: n for n in range(len(started))} == predicted
    # a, c, b in the first round (b served most recently), a, b in the second, a alone in the third.
    names = {t.task_id: t.account_id for t in queued}
    assert [names[t] for t in started] == ["a", "c", "b", "a", "b", "a"]
    assert store.tasks_ahead(store_task(store, other_pool.task_id)) == 0


def test_tasks_ahead_shrinks_as_tasks_ahead_leave(store: TaskStore) -> None:
    first, second, third = new_task(1), new_task(2), new_task(3)
    for t in (first, second, third):
        store.create(t)
    assert [store.tasks_ahead(store_task(store, t.task_id)) for t in (first, second, third)] == [0, 1, 2]
    assert store.cancel_pending(first.task_id, first.account_id, 10)
    assert store.tasks_ahead(store_task(store, first.task_id)) is None
    assert [store.tasks_ahead(store_task(store, t.task_id)) for t in (second, third)] == [0, 1]


def store_task(store: TaskStore, task_id: str) -> Task:
    task = store.get(task_id)
    assert task is not None
    return task


def test_concurrent_claims_never_double(store_factory: Callable[[], TaskStore]) -> None:
    seed = store_factory()
    tasks = [new_task(i) for i in range(200)]
    for t in tasks:
        seed.create(t)
    claimed: dict[str, list[str]] = {}

    def run(name: str) -> None:
        s = store_factory()
        mine = claimed.setdefault(name, [])
        while (task := s.claim(name, 10, LEASE)) is not None:
            mine.append(task.task_id)
            assert s.succeed(task.task_id, name, 20, f"results/{task.task_id}.mp4", 5000)

    threads = [threading.Thread(target=run, args=(f"w{i}",)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    all_ids = [i for ids in claimed.values() for i in ids]
    assert len(all_ids) == len(set(all_ids)) == 200
    assert {t.task_id for t in tasks} == set(all_ids)


def test_transitions_are_enforced(store: TaskStore) -> None:
    t = new_task(1)
    store.create(t)
    assert not store.succeed(t.task_id, "w1", 5, "k", 0)  # PENDING -> SUCCEEDED refused
    assert not store.fail(t.task_id, "w1", 5, ErrorKind.INTERNAL, "y")
    assert store.claim("w1", 5, LEASE) is not None
    assert not store.cancel_pending(t.task_id, "acct-1", 6)  # RUNNING cannot be canceled here
    assert not store.succeed(t.task_id, "w2", 7, "k", 0)  # only the holder finishes
    assert store.succeed(t.task_id, "w1", 8, "results/x.mp4", 5000)
    assert not store.succeed(t.task_id, "w1", 9, "k2", 0)  # never recorded twice
    assert not store.fail(t.task_id, "w1", 9, ErrorKind.INTERNAL, "y")
    got = store.get(t.task_id)
    assert got is not None and got.status is TaskStatus.SUCCEEDED
    assert got.result_key == "results/x.mp4" and got.video_duration_ms == 5000 and got.end_time_ms == 8

    f = new_task(2)
    store.create(f)
    assert store.claim("w1", 5, LEASE) is not None
    assert store.fail(f.task_id, "w1", 6, ErrorKind.IMAGE_FORMAT, "bad image")
    got = store.get(f.task_id)
    assert got is not None and got.status is TaskStatus.FAILED
    assert (got.error_kind, got.error_detail) == (ErrorKind.IMAGE_FORMAT, "bad image")


def test_cancel_pending_only_for_owner(store: TaskStore) -> None:
    t = new_task(1)
    store.create(t)
    assert not store.cancel_pending(t.task_id, "acct-2", 5)
    assert store.cancel_pending(t.task_id, "acct-1", 5)
    assert not store.cancel_pending(t.task_id, "acct-1", 6)
    assert store.claim("w", 7, LEASE) is None
    got = store.get(t.task_id)
    assert got is not None and got.status is TaskStatus.CANCELED and got.end_time_ms == 5


def test_progress_rides_on_the_heartbeat_and_never_decreases(store: TaskStore) -> None:
    t = new_task(1)
    store.create(t)
    fresh = store.get(t.task_id)
    assert fresh is not None and (fresh.progress, fresh.stage) == (None, None)
    assert store.claim("w1", 1000, LEASE) is not None
    assert store.heartbeat(t.task_id, "w1", 1001, LEASE, progress=30, stage=Stage.GENERATING) is Lease.HELD
    assert store.heartbeat(t.task_id, "w1", 1002, LEASE, progress=20, stage=Stage.STORING) is Lease.HELD
    assert store.heartbeat(t.task_id, "w1", 1003, LEASE) is Lease.HELD  # nothing new: both kept
    assert store.heartbeat(t.task_id, "w2", 1004, LEASE, progress=90, stage=Stage.ENCODING) is Lease.LOST
    got = store.get(t.task_id)
    assert got is not None and (got.progress, got.stage) == (30, Stage.STORING)
    assert store.get_many([t.task_id])[t.task_id] == got
    # An engine's own, finer stage is kept as the word it is.
    assert store.heartbeat(t.task_id, "w1", 1005, LEASE, progress=40, stage="denoising") is Lease.HELD
    got = store.get(t.task_id)
    assert got is not None and (got.progress, got.stage) == (40, "denoising")


def test_heartbeat_and_requeue_expired(store: TaskStore) -> None:
    t = new_task(1)
    store.create(t)
    assert store.claim("w1", 1000, 100) is not None
    assert store.heartbeat(t.task_id, "w1", 1050, 100) is Lease.HELD  # lease now ends at 1150
    assert store.heartbeat(t.task_id, "w2", 1050, 100) is Lease.LOST
    assert store.requeue_expired(1100, max_attempts=2) == (0, 0)
    assert store.requeue_expired(1200, max_attempts=2) == (1, 0)
    assert store.heartbeat(t.task_id, "w1", 1200, 100) is Lease.LOST  # the old holder lost it
    assert not store.succeed(t.task_id, "w1", 1200, "k", 0)
    again = store.claim("w2", 1300, 100)
    assert again is not None and again.attempts == 2
    assert store.requeue_expired(1500, max_attempts=2) == (0, 1)
    got = store.get(t.task_id)
    assert got is not None and got.status is TaskStatus.FAILED and got.error_kind is ErrorKind.WORKER_LOST


def test_list_filters_and_paging(store: TaskStore) -> None:
    mine = [new_task(100 + i) for i in range(5)]
    for t in mine:
        store.create(t)
    store.create(new_task(50, account="acct-2"))
    store.cancel_pending(mine[0].task_id, "acct-1", 200)
    total, page = store.list("acct-1", TaskFilter(), 0, 2)
    assert total == 5 and [t.task_id for t in page] == [mine[4].task_id, mine[3].task_id]
    total, page = store.list("acct-1", TaskFilter(status=TaskStatus.CANCELED), 0, 10)
    assert total == 1 and page[0].task_id == mine[0].task_id
    total, _ = store.list("acct-1", TaskFilter(start_ms=102, end_ms=103), 0, 10)
    assert total == 2
    total, _ = store.list("acct-1", TaskFilter(task_id=mine[1].task_id), 0, 10)
    assert total == 1
    total, _ = store.list("acct-1", TaskFilter(model="nope"), 0, 10)
    assert total == 0


def test_keys_and_secrets(store: TaskStore) -> None:
    a = store.create_key("alice", "hash-a", "sk-aaaaaaa", 1)
    b = store.create_key("bob", "hash-b", "sk-bbbbbbb", 2)
    assert a.account_id != b.account_id
    found = store.find_key("hash-a")
    assert found is not None and found.key_id == a.key_id
    assert store.find_key("nope") is None
    assert [k.name for k in store.list_keys()] == ["alice", "bob"]
    assert store.revoke_key(a.key_id, 3)
    assert store.find_key("hash-a") is None
    assert not store.revoke_key(a.key_id, 4)
    assert store.revoke_key("sk-bbbbbbb", 5)
    assert all(k.revoked_ms is not None for k in store.list_keys())
    first = store.get_or_create_secret("s", lambda: "one")
    assert first == "one" and store.get_or_create_secret("s", lambda: "two") == "one"


def test_engine_filter(store: TaskStore) -> None:
    gpu, cpu = new_task(1, engine="wan-vace"), new_task(2)
    store.create(gpu)
    store.create(cpu)
    got = store.claim("w", 10, LEASE, engines=["animatic"])
    assert got is not None and got.task_id == cpu.task_id
    assert store.claim("w", 10, LEASE, engines=["animatic"]) is None
    got = store.claim("w", 10, LEASE, engines=["wan-vace"], models=["happyhorse-1.1-r2v"])
    assert got is not None and got.task_id == gpu.task_id


def test_request_cancel_pending_and_running(store: TaskStore) -> None:
    pending, running = new_task(2), new_task(1)
    store.create(running)
    store.create(pending)
    assert store.claim("w1", 5, LEASE) is not None  # the older one
    assert store.request_cancel(running.task_id, "acct-2", 6) is CancelOutcome.REFUSED
    assert store.request_cancel(running.task_id, "acct-1", 6) is CancelOutcome.REQUESTED
    assert store.heartbeat(running.task_id, "w1", 7, LEASE) is Lease.CANCEL_REQUESTED
    assert not store.release(running.task_id, "w1")  # a task being canceled is not handed back
    assert store.finish_canceled(running.task_id, "w1", 8)
    got = store.get(running.task_id)
    assert got is not None and got.status is TaskStatus.CANCELED and got.end_time_ms == 8
    assert store.request_cancel(running.task_id, "acct-1", 9) is CancelOutcome.REFUSED
    assert store.request_cancel(pending.task_id, "acct-1", 9) is CancelOutcome.CANCELED
    assert not store.finish_canceled(pending.task_id, "w1", 10)


def test_release_hands_back_without_spending_an_attempt(store: TaskStore) -> None:
    t = new_task(1)
    store.create(t)
    assert store.claim("w1", 5, LEASE) is not None
    assert not store.release(t.task_id, "w2")
    assert store.release(t.task_id, "w1")
    got = store.get(t.task_id)
    assert got is not None and got.status is TaskStatus.PENDING and got.attempts == 0
    again = store.claim("w2", 6, LEASE)
    assert again is not None and again.attempts == 1


def test_fair_share_limits_running_per_account(store_factory: Callable[[], TaskStore]) -> None:
    store = store_factory()
    greedy = [new_task(i, account="greedy") for i in range(8)]
    other = new_task(100, account="other")
    for t in [*greedy, other]:
        store.create(t)
    claimed = []
    while (task := store.claim("w", 200, LEASE, max_running_per_account=5)) is not None:
        claimed.append(task)
    accounts = [t.account_id for t in claimed]
    assert accounts.count("greedy") == 5 and accounts.count("other") == 1
    # The greedy account's extra tasks wait PENDING in submit order and go as its running ones finish.
    assert store.succeed(claimed[0].task_id, "w", 300, "k", 0)
    nxt = store.claim("w", 301, LEASE, max_running_per_account=5)
    assert nxt is not None and nxt.task_id == greedy[5].task_id


def test_a_backlog_does_not_hold_up_another_accounts_next_task(store: TaskStore) -> None:
    backlog = [new_task(i, account="flood") for i in range(50)]
    store.create_many(backlog)
    # One worker, one task at a time: nothing is RUNNING at any claim, so only "served longest ago" is fair.
    now = 1000
    first = store.claim("w", now, LEASE)
    assert first is not None and first.account_id == "flood"
    store.create(new_task(500, account="late"))
    store.create(new_task(501, account="later"))
    order = []
    for _ in range(5):
        assert store.succeed(first.task_id, "w", now + 1, "k", 0)
        now += 10
        first = store.claim("w", now, LEASE)
        assert first is not None
        order.append(first.account_id)
    assert order[:2] == ["late", "later"]  # both before the flood's second task
    assert order[2:] == ["flood", "flood", "flood"]
    assert first.task_id == backlog[3].task_id  # within an account, submit order


def test_accounts_with_equal_service_take_turns(store: TaskStore) -> None:
    for i in range(6):
        store.create(new_task(i, account="a"))
        store.create(new_task(100 + i, account="b"))
    accounts = []
    for now in range(1000, 1006):
        task = store.claim("w", now, LEASE)
        assert task is not None
        accounts.append(task.account_id)
        assert store.succeed(task.task_id, "w", now, "k", 0)
    assert accounts == ["a", "b", "a", "b", "a", "b"]


def test_fair_share_holds_under_concurrent_claims(store_factory: Callable[[], TaskStore]) -> None:
    seed = store_factory()
    for i in range(40):
        seed.create(new_task(i, account="greedy"))
    seed.create(new_task(1000, account="other"))
    results: list[str] = []

    def run(name: str) -> None:
        s = store_factory()
        while (task := s.claim(name, 2000, LEASE, max_running_per_account=5)) is not None:
            results.append(task.account_id)

    threads = [threading.Thread(target=run, args=(f"w{i}",)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results.count("greedy") == 5 and results.count("other") == 1


def test_maintain_times_out_and_purges(store: TaskStore) -> None:
    hour = 3600 * 1000
    old_done, stale_running, stale_pending, fresh = new_task(0), new_task(1), new_task(2), new_task(30 * hour)
    for t in (old_done, stale_running, stale_pending, fresh):
        store.create(t)
    assert store.claim("w", 10, LEASE) is not None  # old_done, the oldest
    assert store.succeed(old_done.task_id, "w", 20, "results/old.mp4", 0)
    running = store.claim("w", 10, 100 * hour)  # a lease that outlives the timeout
    assert running is not None and running.task_id == stale_running.task_id
    report = store.maintain(4 * hour, max_attempts=3, timeout_ms=3 * hour, retention_ms=24 * hour)
    assert report is not None and report.timed_out == 2 and report.purged_result_keys == ()
    for t in (stale_pending, stale_running):
        got = store.get(t.task_id)
        assert got is not None and got.status is TaskStatus.FAILED and got.error_kind is ErrorKind.TIMEOUT
    report = store.maintain(25 * hour, max_attempts=3, timeout_ms=3 * hour, retention_ms=24 * hour)
    assert report is not None and report.purged_result_keys == ("results/old.mp4",)
    assert store.get(old_done.task_id) is None and store.get(stale_pending.task_id) is None
    assert store.get(fresh.task_id) is not None


def _wakes(waiter: TaskStore, action: Callable[[], object]) -> bool:
    """True when ``action`` wakes a worker blocked in ``wait_for_work`` (long before its 30 s fallback)."""
    waiter.wait_for_work(0.01)  # starts listening
    woke = threading.Event()

    def wait() -> None:
        waiter.wait_for_work(30)
        woke.set()

    thread = threading.Thread(target=wait)
    thread.start()
    try:
        assert not woke.wait(0.2), "woke with nothing submitted"
        action()
        return woke.wait(25)
    finally:
        thread.join(35)


def test_a_submit_wakes_an_idle_worker(store_factory: Callable[[], TaskStore]) -> None:
    waiter, writer = store_factory(), store_factory()
    assert _wakes(waiter, lambda: writer.create(new_task(1)))


def test_a_handed_back_task_wakes_an_idle_worker(store_factory: Callable[[], TaskStore]) -> None:
    waiter, writer = store_factory(), store_factory()
    # Submitted and claimed before the waiter listens, so only the hand-back can wake it.
    writer.create(new_task(1))
    claimed = writer.claim("w1", 2, LEASE)
    assert claimed is not None
    assert _wakes(waiter, lambda: writer.release(claimed.task_id, "w1"))


def test_sqlite_without_a_doorbell_falls_back_to_polling(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    (tmp_path / "t.db.wake").write_text("in the way")  # a regular file where the FIFO would go
    store = SqliteTaskStore(db)
    store.migrate()
    store.create(new_task(1))  # ringing must not fail the submit
    store.wait_for_work(0.01)  # nor waiting: it sleeps
    assert store.claim("w1", 2, LEASE) is not None
    store.close()


def test_connections_of_finished_threads_are_closed(store: TaskStore) -> None:
    import gc

    conns = store._conns  # type: ignore[attr-defined]
    store.get("warm-up")
    before = conns.open_count()
    threads = [threading.Thread(target=store.get, args=(f"t{i}",)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gc.collect()
    # Every pool thread that retired took its connection with it (before: 20 leaked per burst).
    assert conns.open_count() == before
    assert store.get("still-works") is None


def test_engine_state_is_saved_by_the_holder_only_and_survives_a_requeue(store: TaskStore) -> None:
    nt = new_task(1)
    store.create(nt)
    claimed = store.claim("w1", 10, LEASE)
    assert claimed is not None and claimed.engine_state is None
    assert not store.save_engine_state(nt.task_id, "w2", "not yours")
    assert store.save_engine_state(nt.task_id, "w1", '{"upstream": "abc"}')
    # The lease runs out: the next attempt gets what the first one saved, and may replace it.
    assert store.requeue_expired(10 + LEASE + 1, max_attempts=3) == (1, 0)
    again = store.claim("w2", 10 + LEASE + 2, LEASE)
    assert again is not None and again.attempts == 2 and again.engine_state == '{"upstream": "abc"}'
    assert not store.save_engine_state(nt.task_id, "w1", "lost its lease")
    assert store.save_engine_state(nt.task_id, "w2", "second")
    assert store.fail(nt.task_id, "w2", 99, ErrorKind.UPSTREAM_FAILED, "its words", upstream_code="Its.Code")
    done = store.get(nt.task_id)
    assert done is not None and done.status is TaskStatus.FAILED
    assert (done.error_kind, done.error_detail, done.upstream_code) == (
        ErrorKind.UPSTREAM_FAILED,
        "its words",
        "Its.Code",
    )
    assert done.engine_state == "second"
    assert not store.save_engine_state(nt.task_id, "w2", "after the end")  # only while RUNNING


# --- limits and idempotent submits (schema 6) -------------------------------------------------------------
DAY_MS = 24 * 3600 * 1000


def test_an_idempotency_key_names_one_task(store: TaskStore) -> None:
    first = new_task(1000)
    assert store.create_idempotent(first, "key:k1", "fp-a", 1000) == (first.task_id, True)
    again = new_task(2000)
    # The same key and request: the first task, and no second one.
    assert store.create_idempotent(again, "key:k1", "fp-a", 2000) == (first.task_id, False)
    assert store.get(again.task_id) is None
    assert store.find_idempotent("acct-1", "key:k1", 2000) == ("fp-a", first.task_id)
    # The same key with another request: refused, nothing created.
    with pytest.raises(IdempotencyConflict):
        store.create_idempotent(new_task(3000), "key:k1", "fp-b", 3000)
    # Another account's key of the same name is its own.
    other = new_task(3000, account="acct-2")
    assert store.create_idempotent(other, "key:k1", "fp-b", 3000) == (other.task_id, True)
    total, _ = store.list("acct-1", TaskFilter(), 0, 10)
    assert total == 1


def test_an_idempotency_key_expires_after_a_day(store: TaskStore) -> None:
    first = new_task(1000)
    store.create_idempotent(first, "key:k", "fp", 1000)
    assert store.find_idempotent("acct-1", "key:k", 1000 + DAY_MS + 1) is None
    assert store.find_idempotent("acct-1", "key:k", 5000, max_age_ms=1000) is None
    later = new_task(1000 + DAY_MS + 1)
    # Expired: the key is free again, even for another request.
    assert store.create_idempotent(later, "key:k", "fp-other", 1000 + DAY_MS + 1) == (later.task_id, True)


def test_remembered_and_forgotten_idempotency_keys(store: TaskStore) -> None:
    store.remember_idempotent("acct-1", "retry:s:fp", "fp", "task-1", 1000)
    store.remember_idempotent("acct-1", "retry:s:fp", "fp", "task-2", 2000)
    assert store.find_idempotent("acct-1", "retry:s:fp", 2000) == ("fp", "task-2")
    store.forget_idempotent("acct-1", "retry:s:fp")
    assert store.find_idempotent("acct-1", "retry:s:fp", 2000) is None


def test_concurrent_submits_with_one_key_create_one_task(store_factory: Callable[[], TaskStore]) -> None:
    results: list[tuple[str, bool]] = []
    barrier = threading.Barrier(6)

    def submit() -> None:
        s = store_factory()
        task = new_task(1000)
        barrier.wait()
        results.append(s.create_idempotent(task, "key:race", "fp", 1000))

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(results) == 6
    assert len({task_id for task_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    total, _ = store_factory().list("acct-1", TaskFilter(), 0, 10)
    assert total == 1


def test_queue_caps_count_pending_tasks_of_the_account_or_key(store: TaskStore) -> None:
    cap = QueueCap(3)
    tasks = [new_task(i) for i in range(3)]
    store.create_many(tasks, {t.task_id: cap for t in tasks})
    fourth = new_task(10)
    with pytest.raises(QueueFull):
        store.create_many([fourth], {fourth.task_id: cap})
    assert store.get(fourth.task_id) is None
    # A batch over the cap is refused whole; without a cap, or for another account, tasks still go in.
    store.create(new_task(11))
    # A running task no longer waits: room for one more.
    claimed = store.claim("w", 20, LEASE)
    assert claimed is not None
    fifth = new_task(30)
    with pytest.raises(QueueFull):  # 3 + the uncapped one still wait
        store.create_many([fifth], {fifth.task_id: cap})
    assert store.claim("w", 40, LEASE) is not None
    store.create_many([fifth], {fifth.task_id: cap})
    other = new_task(60, account="acct-2")
    store.create_many([other], {other.task_id: cap})
    # A key's own cap counts that key's tasks alone.
    keyed = new_task(50)
    with pytest.raises(QueueFull):
        store.create_many([keyed], {keyed.task_id: QueueCap(2, per_key=True)})
    with pytest.raises(QueueFull):
        store.create_idempotent(keyed, "key:q", "fp", 50, QueueCap(2))
    assert store.find_idempotent("acct-1", "key:q", 50) is None  # refused: the key names nothing


def test_queue_caps_hold_under_concurrent_submits(store_factory: Callable[[], TaskStore]) -> None:
    created: list[str] = []
    refused: list[str] = []
    barrier = threading.Barrier(4)

    def submit() -> None:
        s = store_factory()
        barrier.wait()
        for i in range(10):
            task = new_task(i)
            try:
                s.create_many([task], {task.task_id: QueueCap(15)})
                created.append(task.task_id)
            except QueueFull:
                refused.append(task.task_id)

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(created) == 15 and len(refused) == 25


def test_rate_windows_are_shared_and_start_again_each_second(store_factory: Callable[[], TaskStore]) -> None:
    a, b = store_factory(), store_factory()
    assert a.take_rate("submit_rps:account:x", 100, 2, 5) == 2
    assert b.take_rate("submit_rps:account:x", 100, 2, 5) == 2
    assert a.take_rate("submit_rps:account:x", 100, 2, 5) == 1  # only one left in this window
    assert b.take_rate("submit_rps:account:x", 100, 1, 5) == 0
    assert a.take_rate("submit_rps:account:y", 100, 1, 5) == 1  # scopes are independent
    assert b.take_rate("submit_rps:account:x", 101, 1, 5) == 1  # a new window
    assert a.take_rate("submit_rps:account:x", 100, 1, 5) == 1  # a lagging clock counts in the newer window
    assert a.take_rate("submit_rps:account:x", 101, 3, 5) == 3
    assert a.take_rate("submit_rps:account:x", 101, 1, 5) == 0


def test_rate_takes_never_exceed_the_limit_under_concurrency(store_factory: Callable[[], TaskStore]) -> None:
    granted: list[int] = []
    barrier = threading.Barrier(4)

    def take() -> None:
        s = store_factory()
        barrier.wait()
        for _ in range(20):
            granted.append(s.take_rate("query_rps:account:z", 7, 3, 50))

    threads = [threading.Thread(target=take) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sum(granted) == 50


def test_limits_on_keys_and_accounts(store: TaskStore) -> None:
    key = store.create_key("carol", "hash-c", "sk-ccccccc", 1, Limits(submit_rps=2))
    assert key.limits == Limits(submit_rps=2)
    found = store.find_key("hash-c")
    assert found is not None and found.limits == Limits(submit_rps=2) and found.account_limits == Limits()
    assert store.update_limits("sk-ccccccc", {"max_queued": 7, "submit_rps": None})
    assert store.update_limits(key.key_id, {"query_rps": 0, "max_stored_mb": 10}, on_account=True)
    found = store.find_key("hash-c")
    assert found is not None
    assert found.limits == Limits(max_queued=7)
    assert found.account_limits == Limits(query_rps=0, max_stored_mb=10)
    assert [k.account_limits for k in store.list_keys()] == [Limits(query_rps=0, max_stored_mb=10)]
    assert not store.update_limits("sk-nobody", {"max_queued": 1})
    with pytest.raises(ValueError):
        store.update_limits(key.key_id, {"not_a_limit": 1})


def test_stored_bytes_count_uploads_until_they_expire_and_references_while_their_task_waits(
    store: TaskStore,
) -> None:
    task = new_task(1000)
    store.create(task)
    store.record_stored(
        [
            StoredInput("uploads/a", "acct-1", None, None, 100, 5000),
            StoredInput(f"inputs/{task.task_id}/1", "acct-1", "key-1", task.task_id, 20, 10_000),
            StoredInput("inputs/never-created/1", "acct-1", "key-1", "never-created", 7, 10_000),
            StoredInput("uploads/b", "acct-2", None, None, 1, 5000),
        ]
    )
    assert store.stored_bytes("acct-1", 2000) == 120  # a submit that created no task counts nothing
    claimed = store.claim("w", 2000, LEASE)
    assert claimed is not None and store.stored_bytes("acct-1", 2000) == 120  # RUNNING: still needed
    assert store.succeed(task.task_id, "w", 3000, "results/x.mp4", 5000)
    assert store.stored_bytes("acct-1", 3000) == 100
    assert store.stored_bytes("acct-1", 6000) == 0 and store.stored_bytes("acct-2", 4000) == 1


def test_pending_counts_follow_every_way_a_task_leaves_or_reenters_the_queue(
    store_factory: Callable[[], TaskStore],
) -> None:
    """The queue cap reads counters kept with the tasks (inserts count their batch, triggers the rest);
    after idempotent creates, claims, cancels, hand-backs, requeues, timeouts and purges they must still
    equal a count of the table."""
    store = store_factory()
    for i in range(6):
        store.create(new_task(i))
    assert store.create_idempotent(new_task(7), "idem-1", "fp", 7)[1]
    assert not store.create_idempotent(new_task(8), "idem-1", "fp", 8)[1]  # the same key: no task, no count
    store.create_many([new_task(10 + i, account="acct-2") for i in range(3)])
    a = store.claim("w", 100, 1000)
    b = store.claim("w", 100, 1000)
    assert a is not None and b is not None
    assert store.release(a.task_id, "w")  # back to PENDING
    pending = [t for t in store.list("acct-1", TaskFilter(status=TaskStatus.PENDING), 0, 100)[1]]
    assert store.cancel_pending(pending[0].task_id, "acct-1", 200)
    store.requeue_expired(5000, max_attempts=3)  # b's lease ran out: PENDING again
    store.maintain(10**9, max_attempts=3, timeout_ms=10**12, retention_ms=10**12)
    for account in ("acct-1", "acct-2"):
        waiting = store.list(account, TaskFilter(status=TaskStatus.PENDING), 0, 100)[0]
        cap = QueueCap(waiting)
        extra = new_task(300, account=account)
        with pytest.raises(QueueFull):  # exactly at its cap: the counter says what the table says
            store.create_many([extra], {extra.task_id: cap})
        store.create_many([extra], {extra.task_id: QueueCap(waiting + 1)})
    # Purged PENDING tasks leave the count too.
    store.maintain(10**12, max_attempts=3, timeout_ms=1, retention_ms=1)
    extra = new_task(10**12)
    store.create_many([extra], {extra.task_id: QueueCap(1)})


def test_page_walks_one_account_by_cursor_both_ways(store: TaskStore) -> None:
    # Two tasks share a submit time: the task id breaks the tie, and the cursor still visits each once.
    mine = [new_task(t) for t in (10, 20, 20, 30, 40)]
    store.create_many([*mine, new_task(25, account="acct-2")])
    by_order = sorted(mine, key=lambda t: (t.submit_time_ms, t.task_id))
    for newest_first, expected in ((True, by_order[::-1]), (False, by_order)):
        seen: list[str] = []
        after: Task | None = None
        while True:
            page = store.page("acct-1", after, 2, newest_first=newest_first)
            if not page:
                break
            assert len(page) <= 2
            seen += [t.task_id for t in page]
            after = page[-1]
        assert seen == [t.task_id for t in expected]
    assert store.page("acct-3", None, 10) == []
    first = store.page("acct-1", None, 1)[0]
    assert first == store.get(first.task_id)


def test_delete_task_removes_it_whatever_its_status(store: TaskStore) -> None:
    running, pending, done = new_task(1), new_task(2, media=3), new_task(3)
    store.create_many([running, done])
    assert store.claim("w1", 5, LEASE) is not None  # running
    assert store.claim("w2", 5, LEASE) is not None  # done
    assert store.succeed(done.task_id, "w2", 6, "results/x.mp4", 5000)
    store.create_many([pending], {pending.task_id: QueueCap(1)})
    store.record_stored(
        [StoredInput(f"inputs/{pending.task_id}/1", "acct-1", "key-1", pending.task_id, 1000, 10**15)]
    )
    assert store.stored_bytes("acct-1", 7) == 1000

    assert store.delete_task(done.task_id, "acct-2") is None  # another account's
    gone = store.delete_task(done.task_id, "acct-1")
    assert gone is not None and gone.status is TaskStatus.SUCCEEDED and gone.result_key == "results/x.mp4"
    assert store.get(done.task_id) is None
    assert store.delete_task(done.task_id, "acct-1") is None  # already gone

    gone = store.delete_task(pending.task_id, "acct-1")
    assert gone is not None and gone.status is TaskStatus.PENDING and gone.media_urls == pending.media_urls
    assert store.stored_bytes("acct-1", 7) == 0
    # Its place in the queue is free again (the account's cap of 1 was full with it).
    later = new_task(8)
    store.create_many([later], {later.task_id: QueueCap(1)})
    with pytest.raises(QueueFull):
        extra = new_task(9)
        store.create_many([extra], {extra.task_id: QueueCap(1)})

    gone = store.delete_task(running.task_id, "acct-1")
    assert gone is not None and gone.status is TaskStatus.RUNNING
    # Its worker loses the task: the heartbeat says so, and the finish is refused.
    assert store.heartbeat(running.task_id, "w1", 10, LEASE) is Lease.LOST
    assert not store.succeed(running.task_id, "w1", 11, "results/y.mp4", 5000)
    assert store.get(running.task_id) is None
    assert all(t.task_id != running.task_id for t in store.list("acct-1", TaskFilter(), 0, 100)[1])


# --- events and webhooks ----------------------------------------------------------------------------------


def _now() -> int:
    return int(time.time() * 1000)


def _hook(
    account: str = "acct-1", events: tuple[EventKind, ...] = ALL_EVENT_KINDS, fmt: str = "standard"
) -> Webhook:
    return Webhook(
        webhook_id="wh_" + uuid.uuid4().hex[:12],
        account_id=account,
        url="https://receiver.test/hook",
        events=events,
        format=fmt,
        include_result=True,
        created_ms=_now(),
    )


def test_every_status_change_is_an_event_with_the_task_as_it_left_it(store: TaskStore) -> None:
    done, failed, canceled, lost = (new_task(_now() + i) for i in range(4))
    for t in (done, failed, canceled, lost):
        store.create(t)
    assert store.last_event_seq("acct-1") == 0
    assert store.cancel_pending(canceled.task_id, "acct-1", _now())
    first = store.claim("w", _now(), LEASE)
    assert first is not None and first.task_id == done.task_id
    assert store.succeed(done.task_id, "w", _now(), "results/done.mp4", 5000)
    assert store.claim("w", _now(), LEASE) is not None
    assert store.fail(failed.task_id, "w", _now(), ErrorKind.ENGINE_FAILED, "boom")
    assert store.claim("w", _now(), 1) is not None  # lost: its lease runs out at once
    time.sleep(0.01)
    assert store.requeue_expired(_now(), max_attempts=3) == (1, 0)  # back to PENDING: not an event
    events = store.events_after("acct-1", 0, 100)
    got = [(e.task_id, e.kind) for e in events]
    assert got == [
        (canceled.task_id, EventKind.CANCELED),
        (done.task_id, EventKind.RUNNING),
        (done.task_id, EventKind.SUCCEEDED),
        (failed.task_id, EventKind.RUNNING),
        (failed.task_id, EventKind.FAILED),
        (lost.task_id, EventKind.RUNNING),
    ]
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert store.last_event_seq("acct-1") == seqs[-1]
    assert store.events_after("acct-1", seqs[2], 2) == events[3:5]
    succeeded = events[2].task
    assert succeeded.status is TaskStatus.SUCCEEDED and succeeded.result_key == "results/done.mp4"
    assert succeeded.video_duration_ms == 5000 and succeeded.params == PARAMS
    assert events[1].task.status is TaskStatus.RUNNING and events[1].task.result_key is None
    assert events[4].task.error_kind is ErrorKind.ENGINE_FAILED and events[4].task.error_detail == "boom"
    assert store.events_after("acct-2", 0, 100) == []


def test_deliveries_follow_webhook_filters_and_callback_urls(store: TaskStore) -> None:
    all_hook = _hook()
    finished_only = _hook(events=(EventKind.SUCCEEDED, EventKind.FAILED), fmt="dashscope-event")
    other_account = _hook(account="acct-2")
    for hook in (all_hook, finished_only, other_account):
        store.add_webhook(hook)
    assert store.list_webhooks("acct-1") == sorted(
        [all_hook, finished_only], key=lambda h: (h.created_ms, h.webhook_id)
    )
    task = dataclasses.replace(new_task(_now()), callback_url="https://cb.test/x")
    store.create(task)
    assert store.claim("w", _now(), LEASE) is not None
    assert store.succeed(task.task_id, "w", _now(), "results/x.mp4", 5000)
    made = store.task_deliveries(task.task_id, "acct-1")
    targets = sorted((d.event.kind, d.webhook_id or "callback", d.format) for d in made)
    assert targets == sorted(
        [
            (EventKind.RUNNING, all_hook.webhook_id, "standard"),
            (EventKind.RUNNING, "callback", "standard"),
            (EventKind.SUCCEEDED, all_hook.webhook_id, "standard"),
            (EventKind.SUCCEEDED, finished_only.webhook_id, "dashscope-event"),
            (EventKind.SUCCEEDED, "callback", "standard"),
        ]
    )
    assert {d.url for d in made if d.webhook_id is None} == {"https://cb.test/x"}
    assert len({d.delivery_id for d in made}) == 5
    assert all(d.state is DeliveryState.PENDING and d.attempts == 0 for d in made), made
    assert store.task_deliveries(task.task_id, "acct-2") == []


def test_a_tasks_deliveries_to_one_endpoint_go_out_in_order(store_factory: Callable[[], TaskStore]) -> None:
    store, other = store_factory(), store_factory()
    hook = _hook()
    store.add_webhook(hook)
    task = new_task(_now())
    store.create(task)
    assert store.claim("w", _now(), LEASE) is not None
    assert store.succeed(task.task_id, "w", _now(), "results/x.mp4", 5000)
    now = _now()
    claimed = store.claim_deliveries("pump-1", now, 10_000, 10)
    assert [d.event.kind for d in claimed] == [EventKind.RUNNING]  # the succeeded one waits behind it
    assert other.claim_deliveries("pump-2", now, 10_000, 10) == []  # held by pump-1
    running = claimed[0]
    attempt = DeliveryAttempt(1, now, 5, 500, "HTTP 500")
    assert not other.record_attempt(
        running.delivery_id, "pump-2", attempt, delivered=False, next_attempt_ms=now
    )
    assert store.record_attempt(
        running.delivery_id, "pump-1", attempt, delivered=False, next_attempt_ms=now + 60_000
    )
    assert other.claim_deliveries("pump-2", now + 1000, 10_000, 10) == []  # backing off, and still first
    again = other.claim_deliveries("pump-2", now + 60_000, 10_000, 10)
    assert [d.delivery_id for d in again] == [running.delivery_id] and again[0].tries == 1
    ok = DeliveryAttempt(2, now + 60_000, 3, 200, None)
    assert other.record_attempt(running.delivery_id, "pump-2", ok, delivered=True, next_attempt_ms=None)
    after = store.claim_deliveries("pump-1", now + 60_001, 10_000, 10)
    assert [d.event.kind for d in after] == [EventKind.SUCCEEDED]
    # A claim whose worker went away is claimed again once its lease ends.
    assert store.claim_deliveries("pump-1", now + 60_002, 10_000, 10) == []
    retaken = other.claim_deliveries("pump-2", now + 70_002, 10_000, 10)
    assert [d.delivery_id for d in retaken] == [after[0].delivery_id]
    given_up = DeliveryAttempt(1, now, 1, None, "timed out")
    assert other.record_attempt(
        retaken[0].delivery_id, "pump-2", given_up, delivered=False, next_attempt_ms=None
    )
    by_id = {d.delivery_id: d for d in store.task_deliveries(task.task_id, "acct-1")}
    first, second = by_id[running.delivery_id], by_id[retaken[0].delivery_id]
    assert first.state is DeliveryState.DELIVERED and first.attempts == 2
    assert [(a.attempt, a.status_code, a.error) for a in first.history] == [
        (1, 500, "HTTP 500"),
        (2, 200, None),
    ]
    assert second.state is DeliveryState.FAILED and second.next_attempt_ms is None
    # Redeliver: the same id, due now, a fresh schedule; its history stays.
    again_due = store.redeliver(task.task_id, "acct-1", second.delivery_id, now + 80_000)
    assert again_due is not None and again_due.delivery_id == second.delivery_id
    assert again_due.state is DeliveryState.PENDING and again_due.tries == 0 and again_due.attempts == 1
    assert store.redeliver(task.task_id, "acct-2", second.delivery_id, now) is None
    assert [d.delivery_id for d in store.claim_deliveries("p", now + 80_000, 10_000, 10)] == [
        second.delivery_id
    ]


def test_removing_a_webhook_drops_what_it_has_not_received(store: TaskStore) -> None:
    hook = _hook()
    store.add_webhook(hook)
    task = new_task(_now())
    store.create(task)
    assert store.claim("w", _now(), LEASE) is not None
    assert not store.remove_webhook("acct-2", hook.webhook_id)
    assert store.remove_webhook("acct-1", hook.webhook_id)
    assert store.list_webhooks("acct-1") == []
    assert [d.state for d in store.task_deliveries(task.task_id, "acct-1")] == [DeliveryState.DROPPED]
    assert store.claim_deliveries("p", _now() + 1000, 10_000, 10) == []
    assert store.succeed(task.task_id, "w", _now(), "results/x.mp4", 5000)
    assert len(store.task_deliveries(task.task_id, "acct-1")) == 1  # no webhook, no new delivery


def test_webhook_secrets_rotate_with_an_overlap(store: TaskStore) -> None:
    made: list[str] = []

    def factory() -> str:
        made.append(f"s{len(made)}")
        return made[-1]

    first = store.webhook_secrets("acct-1", factory)
    assert first == store.webhook_secrets("acct-1", factory) and first.signing(0) == (first.current,)
    rotated = store.rotate_webhook_secret("acct-1", "new", 1000, 500)
    assert rotated.current == "new" and rotated.previous == first.current
    assert rotated.signing(1200) == ("new", first.current) and rotated.signing(1500) == ("new",)
    assert store.webhook_secrets("acct-1", factory) == rotated
    fresh = store.rotate_webhook_secret("acct-3", "only", 1000, 500)
    assert fresh.current == "only" and fresh.previous is None


def test_a_deleted_or_purged_task_takes_its_events_along(store: TaskStore) -> None:
    store.add_webhook(_hook())
    kept, deleted = new_task(_now()), new_task(_now() + 1)
    for t in (kept, deleted):
        store.create(t)
    for _ in range(2):
        assert store.claim("w", _now(), LEASE) is not None
    assert store.delete_task(deleted.task_id, "acct-1") is not None
    assert [e.task_id for e in store.events_after("acct-1", 0, 10)] == [kept.task_id]
    assert store.task_deliveries(deleted.task_id, "acct-1") == []
    assert store.succeed(kept.task_id, "w", _now(), "results/k.mp4", 5000)
    day = 24 * 3600 * 1000
    assert store.maintain(_now() + 2 * day, max_attempts=3, timeout_ms=day, retention_ms=day) is not None
    assert store.events_after("acct-1", 0, 10) == [] and store.task_deliveries(kept.task_id, "acct-1") == []
    assert store.last_event_seq("acct-1") == 0


def test_a_reader_following_events_never_skips_one_committed_late(
    store_factory: Callable[[], TaskStore],
) -> None:
    """Many workers finish one account's tasks at once while a reader follows with events_after: the reader
    ends with every event, each once, as a client resuming by seq would."""
    store = store_factory()
    tasks = [new_task(_now() + i) for i in range(40)]
    store.create_many(tasks)
    done = threading.Event()
    errors: list[BaseException] = []

    def work(n: int) -> None:
        mine = store_factory()
        try:
            while (claimed := mine.claim(f"w{n}", _now(), LEASE)) is not None:
                mine.succeed(claimed.task_id, f"w{n}", _now(), "results/r.mp4", 1000)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for w in workers:
        w.start()
    reader = store_factory()
    seen: list[int] = []
    last = 0

    def follow() -> None:
        nonlocal last
        for event in reader.events_after("acct-1", last, 7):
            seen.append(event.seq)
            last = event.seq

    watcher = threading.Thread(target=lambda: ([w.join() for w in workers] and None) or done.set())
    watcher.start()
    while not done.is_set():
        follow()
    for _ in range(20):
        follow()
    watcher.join()
    assert not errors
    everything = [e.seq for e in reader.events_after("acct-1", 0, 1000)]
    assert len(everything) == 80
    assert seen == everything
