"""The API's store calls: coalesced task reads answer each poll as a lone read would."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Collection
from pathlib import Path

import pytest

from videosynth.api.storecalls import ReadBatcher
from videosynth.tasks.models import GenerationParams, NewTask, Task
from videosynth.tasks.sqlite import SqliteTaskStore


class BatchRecordingStore(SqliteTaskStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[list[str]] = []

    def get_many(self, task_ids: Collection[str]) -> dict[str, Task]:
        self.batches.append(list(task_ids))
        return super().get_many(task_ids)


@pytest.fixture
def store(tmp_path: Path) -> BatchRecordingStore:
    s = BatchRecordingStore(tmp_path / "db.sqlite")
    s.migrate()
    return s


def new_task(account: str) -> NewTask:
    return NewTask(
        task_id=str(uuid.uuid4()),
        account_id=account,
        api_key_id="key-1",
        request_id=str(uuid.uuid4()),
        model="happyhorse-1.1-r2v",
        engine="animatic",
        prompt="[Image 1] walks",
        media_urls=("https://img.test/1.png",),
        params=GenerationParams(
            resolution="720P", ratio="16:9", duration=5, seed=1, watermark=True, width=1280, height=720
        ),
        submit_time_ms=1000,
    )


def test_a_burst_of_polls_is_one_read_and_each_gets_its_own_task(store: BatchRecordingStore) -> None:
    tasks = [new_task(f"acct-{i % 3}") for i in range(40)]
    store.create_many(tasks)
    asked = [t.task_id for t in tasks] + [tasks[0].task_id, "missing-1", "missing-2"]

    async def burst() -> list[Task | None]:
        reads = ReadBatcher(store)
        return await asyncio.gather(*(reads.get(task_id) for task_id in asked))

    got = asyncio.run(burst())
    assert len(store.batches) == 1
    for task_id, task in zip(asked, got, strict=True):
        if task_id.startswith("missing"):
            assert task is None
        else:
            assert task is not None and task == store.get(task_id)


def test_a_read_sees_every_write_finished_before_it(store: BatchRecordingStore) -> None:
    async def write_then_read() -> None:
        reads = ReadBatcher(store)
        for _ in range(5):
            task = new_task("acct-1")
            store.create(task)
            got = await reads.get(task.task_id)
            assert got is not None and got.task_id == task.task_id

    asyncio.run(write_then_read())


def test_one_unreadable_id_fails_only_its_own_poll(store: BatchRecordingStore) -> None:
    task = new_task("acct-1")
    store.create(task)
    unencodable = "\ud800"  # the driver refuses to encode a lone surrogate: the batch's statement fails

    async def burst() -> list[Task | BaseException | None]:
        reads = ReadBatcher(store)
        return await asyncio.gather(reads.get(task.task_id), reads.get(unencodable), return_exceptions=True)

    good, bad = asyncio.run(burst())
    assert isinstance(good, Task) and good.task_id == task.task_id
    assert isinstance(bad, BaseException)
