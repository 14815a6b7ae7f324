"""How the API calls the synchronous store without paying a thread hand-off per request.

Measured (docs/benchmarks.md, "API under load"): a query that hopped onto anyio's thread pool twice spent
about 1 ms of server CPU, four times the bare framework's whole request, in the hand-off and in dozens of
pool threads contending for the GIL. So:

* reads run on the event loop where the store says they are short and never wait (``inline_reads``:
  SQLite in WAL mode), else on the thread pool;
* task polls on a networked store go through :class:`ReadBatcher`: one reader thread fetches every task
  asked for meanwhile in one statement. Each read starts after its request arrived, so a poll still sees
  every submit answered before it.
* task creation goes through :class:`CreateBatcher`: one writer thread commits every submit that arrived
  meanwhile in a single transaction, and each submit is answered only after its own batch committed, so a
  200 still means the task is durable.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from starlette.concurrency import run_in_threadpool

from videosynth.tasks.models import NewTask, QueueCap, Task
from videosynth.tasks.store import TaskStore

P = ParamSpec("P")
T = TypeVar("T")
log = logging.getLogger(__name__)

# Bounds one transaction; a burst larger than this is committed in several.
MAX_BATCH = 256


class StoreCalls:
    def __init__(self, store: TaskStore) -> None:
        self.store = store
        self._inline = bool(getattr(store, "inline_reads", False))
        self._batcher = CreateBatcher(store)
        self._reads = ReadBatcher(store)

    async def read(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._inline:
            return fn(*args, **kwargs)
        return await run_in_threadpool(fn, *args, **kwargs)

    async def get_task(self, task_id: str) -> Task | None:
        if self._inline:
            return self.store.get(task_id)
        return await self._reads.get(task_id)

    async def create(self, task: NewTask, cap: QueueCap | None = None) -> None:
        await self._batcher.create(task, cap)

    async def write(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Any other write, on the writer thread: it never waits on the database's write lock on the event
        loop, and never contends with the group commits of this process."""
        return await self._batcher.run(fn, *args, **kwargs)


class ReadBatcher:
    """Task reads coalesced on one dedicated reader thread: one round trip serves a whole burst of polls."""

    def __init__(self, store: TaskStore) -> None:
        self._store = store
        self._pending: dict[str, list[asyncio.Future[Task | None]]] = {}
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None
        self._reader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-reader")

    async def get(self, task_id: str) -> Task | None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Task | None] = loop.create_future()
        self._pending.setdefault(task_id, []).append(done)
        if not self._flushing:
            self._flushing = True
            self._flusher = loop.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, {}
                try:
                    found = await loop.run_in_executor(self._reader, self._store.get_many, list(batch))
                except Exception:  # noqa: BLE001 - settled per task below
                    await self._one_by_one(loop, batch)
                    continue
                for task_id, waiters in batch.items():
                    _settle(waiters, found.get(task_id))
        finally:
            self._flushing = False

    async def _one_by_one(
        self, loop: asyncio.AbstractEventLoop, batch: dict[str, list[asyncio.Future[Task | None]]]
    ) -> None:
        # One unreadable id (or an outage) must fail only the polls it concerns.
        for task_id, waiters in batch.items():
            try:
                task = await loop.run_in_executor(self._reader, self._store.get, task_id)
            except Exception as exc:  # noqa: BLE001 - handed to the polls that wait for it
                for done in waiters:
                    if not done.done():
                        done.set_exception(exc)
            else:
                _settle(waiters, task)


def _settle(waiters: list[asyncio.Future[Task | None]], task: Task | None) -> None:
    for done in waiters:
        if not done.done():
            done.set_result(task)


class CreateBatcher:
    """Group commit of new tasks on one dedicated writer thread."""

    def __init__(self, store: TaskStore) -> None:
        self._store = store
        self._pending: list[tuple[NewTask, QueueCap | None, asyncio.Future[None]]] = []
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None
        # One thread: writes never contend with each other in this process, and the event loop never
        # waits on the database's write lock.
        self._writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, functools.partial(fn, *args, **kwargs))

    async def create(self, task: NewTask, cap: QueueCap | None = None) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._pending.append((task, cap, done))
        if not self._flushing:
            self._flushing = True
            # Kept: the loop holds tasks only weakly, and a collected flush would strand its submits.
            self._flusher = loop.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                caps = {t.task_id: c for t, c, _ in batch if c is not None}
                try:
                    await loop.run_in_executor(
                        self._writer, self._store.create_many, [t for t, _, _ in batch], caps
                    )
                except Exception:  # noqa: BLE001 - settled per task below
                    await self._one_by_one(loop, batch)
                    continue
                for _, _, done in batch:
                    if not done.done():
                        done.set_result(None)
        finally:
            self._flushing = False

    async def _one_by_one(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[tuple[NewTask, QueueCap | None, asyncio.Future[None]]],
    ) -> None:
        # One bad task, a full queue or a store outage must fail only the submits it concerns.
        for task, cap, done in batch:
            try:
                await loop.run_in_executor(
                    self._writer, self._store.create_many, [task], {task.task_id: cap} if cap else None
                )
            except Exception as exc:  # noqa: BLE001 - handed to the submit that waits for it
                if not done.done():
                    done.set_exception(exc)
            else:
                if not done.done():
                    done.set_result(None)
