"""Schema 2 reads what schema 1 wrote: failures in DashScope's words, SUCCEEDED tasks' usage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from videosynth.api.dashscope import responses
from videosynth.errors import ErrorKind
from videosynth.tasks import postgres, sqlite
from videosynth.tasks.models import GenerationParams, NewTask, TaskStatus
from videosynth.tasks.sqlstore import SqlTaskStore

PARAMS = {
    "resolution": "720P",
    "ratio": "9:16",
    "duration": 5,
    "seed": 1,
    "watermark": True,
    "width": 720,
    "height": 1280,
}
# Exactly what schema 1 stored for a SUCCEEDED task of PARAMS (usage_for of that version).
SCHEMA_1_USAGE = {
    "duration": 5,
    "input_video_duration": 0,
    "output_video_duration": 5,
    "video_count": 1,
    "SR": 720,
    "ratio": "9:16",
}


@pytest.fixture(params=["sqlite", "postgres"])
def schema_1_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SqlTaskStore]:
    store: SqlTaskStore
    if request.param == "postgres":
        store = postgres.PostgresTaskStore(request.getfixturevalue("pg_url"))
        module, first = postgres, ("postgres_001.sql",)
    else:
        store = sqlite.SqliteTaskStore(tmp_path / "old.db")
        module, first = sqlite, ("sqlite_001.sql",)
    with monkeypatch.context() as m:
        m.setattr(module, "MIGRATIONS", first)
        assert store.migrate() == 1
    yield store
    store.close()


def _insert_schema_1_task(store: SqlTaskStore, task_id: str, status: str, **columns: object) -> None:
    row = {
        "task_id": task_id, "account_id": "acct", "api_key_id": "key", "request_id": "req",
        "model": "happyhorse-1.1-r2v", "engine": "animatic", "prompt": "[Image 1]", "params": json.dumps(PARAMS),
        "status": status, "submit_time_ms": 1_000, "end_time_ms": 2_000, **columns,
    }  # fmt: skip
    with store._transaction() as conn:
        store._execute(
            conn,
            f"INSERT INTO tasks ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            list(row.values()),
        )


def test_schema_1_tasks_read_correctly_after_the_migration(schema_1_store: SqlTaskStore) -> None:
    store = schema_1_store
    _insert_schema_1_task(
        store,
        "failed",
        "FAILED",
        error_code="InvalidFile.Format",
        error_message="Failed to decode [Image 2].",
    )
    _insert_schema_1_task(
        store, "done", "SUCCEEDED", result_key="results/done-1.mp4", usage=json.dumps(SCHEMA_1_USAGE)
    )
    _insert_schema_1_task(store, "lost", "FAILED", error_code="InternalError", error_message="worker lost")
    _insert_schema_1_task(store, "waiting", "PENDING", end_time_ms=None)

    assert store.migrate() == 8
    assert store.migrate() == 8  # idempotent

    tz = ZoneInfo("UTC")
    failed = store.get("failed")
    assert failed is not None and failed.error_kind is None
    out = responses.task_output(failed, tz, None)["output"]
    assert (out["code"], out["message"]) == ("InvalidFile.Format", "Failed to decode [Image 2].")

    done = store.get("done")
    assert done is not None and done.status is TaskStatus.SUCCEEDED and done.video_duration_ms == 5000
    assert responses.task_output(done, tz, "http://x/v.mp4")["usage"] == SCHEMA_1_USAGE

    lost = store.get("lost")
    assert lost is not None and responses.task_output(lost, tz, None)["output"]["code"] == "InternalError"

    # New failures are stored in the domain's terms, next to the old ones.
    waiting = store.claim("w", 3_000, 30_000)
    assert waiting is not None and waiting.task_id == "waiting"
    assert store.fail("waiting", "w", 4_000, ErrorKind.IMAGE_SIZE, None)
    now_failed = store.get("waiting")
    assert now_failed is not None and now_failed.legacy_error is None
    out = responses.task_output(now_failed, tz, None)["output"]
    assert out["code"] == "InvalidFile.Size" and out["message"].startswith("Invalid file size.")


def test_schema_7_recounts_the_queue_and_counts_each_new_task_once(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for kind in ("sqlite", "postgres"):
        store: SqlTaskStore
        if kind == "postgres":
            store, module = postgres.PostgresTaskStore(request.getfixturevalue("pg_url")), postgres
        else:
            store, module = sqlite.SqliteTaskStore(tmp_path / "six.db"), sqlite
        try:
            with monkeypatch.context() as m:
                m.setattr(module, "MIGRATIONS", module.MIGRATIONS[:6])
                assert store.migrate() == 6
            _insert_schema_1_task(store, "waiting-1", "PENDING", end_time_ms=None)
            _insert_schema_1_task(store, "waiting-2", "PENDING", end_time_ms=None)
            with store._transaction() as conn:  # a counter gone wrong under schema 6
                store._execute(conn, "UPDATE pending_counts SET n = 40 WHERE scope = 'a:acct'")
            assert store.migrate() == 8
            assert _counts(store) == {"a:acct": 2, "k:key": 2}
            store.create_many([_new_task("waiting-3"), _new_task("waiting-4")])
            assert _counts(store) == {"a:acct": 4, "k:key": 4}
        finally:
            store.close()


def test_schema_8_records_the_events_of_tasks_older_than_it(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task that was waiting or running when the server was upgraded reports its next changes as events;
    nothing is made up for what happened before."""
    for kind in ("sqlite", "postgres"):
        store: SqlTaskStore
        if kind == "postgres":
            store, module = postgres.PostgresTaskStore(request.getfixturevalue("pg_url")), postgres
        else:
            store, module = sqlite.SqliteTaskStore(tmp_path / "seven.db"), sqlite
        try:
            with monkeypatch.context() as m:
                m.setattr(module, "MIGRATIONS", module.MIGRATIONS[:7])
                assert store.migrate() == 7
            _insert_schema_1_task(store, "done-before", "SUCCEEDED", result_key="results/d.mp4")
            _insert_schema_1_task(store, "waiting", "PENDING", end_time_ms=None)
            assert store.migrate() == 8
            assert store.events_after("acct", 0, 10) == []
            claimed = store.claim("w", 5_000, 30_000)
            assert claimed is not None and claimed.task_id == "waiting" and claimed.callback_url is None
            assert store.succeed("waiting", "w", 6_000, "results/w.mp4", 5000)
            events = store.events_after("acct", 0, 10)
            assert [(e.task_id, e.kind.value) for e in events] == [
                ("waiting", "running"),
                ("waiting", "succeeded"),
            ]
            assert events[1].task.result_key == "results/w.mp4"
        finally:
            store.close()


def _counts(store: SqlTaskStore) -> dict[str, int]:
    with store._transaction() as conn:
        rows = store._execute(conn, "SELECT scope, n FROM pending_counts").fetchall()
    return {row["scope"]: int(row["n"]) for row in rows}


def _new_task(task_id: str) -> NewTask:
    return NewTask(
        task_id=task_id,
        account_id="acct",
        api_key_id="key",
        request_id="req",
        model="happyhorse-1.1-r2v",
        engine="animatic",
        prompt="[Image 1]",
        media_urls=("https://img.test/1.png",),
        params=GenerationParams.from_dict(PARAMS),
        submit_time_ms=3_000,
    )
