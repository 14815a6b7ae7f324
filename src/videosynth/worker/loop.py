"""The worker loop: claim -> fetch and validate media -> generate in the engine process -> store -> finish.

A heartbeat thread renews the task's lease and watches for a cancel request; the engine is asked to stop
(within one progress step) when the task is canceled, when the lease is lost, or when a stopping worker's
drain time runs out, in which case the task is handed back to the queue.
"""

from __future__ import annotations

import enum
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from videosynth import sizes, uploads
from videosynth.engines.base import GenerationRequest, ReferenceImage
from videosynth.errors import Canceled, ErrorKind, MediaNotFound, StoreError, VideosynthError
from videosynth.maintenance import EVERY_S as MAINTENANCE_EVERY_S
from videosynth.maintenance import run_maintenance
from videosynth.media.fetch import FetchPolicy, fetch_media, warm_up
from videosynth.media.validate import validate_image
from videosynth.settings import Settings
from videosynth.storage.base import Storage
from videosynth.tasks.models import Lease, Task, TaskStatus
from videosynth.tasks.store import TaskStore
from videosynth.worker.host import EngineHost

log = logging.getLogger(__name__)

FETCH_THREADS = 4
# A cancel lands within a second: the heartbeat looks at the task this often.
WATCH_EVERY_S = 0.25
# While the store is unavailable, a finished task's outcome is offered again this often (for up to a lease).
RECORD_RETRY_S = 0.5


def _looks_like_task_id(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def now_ms() -> int:
    return int(time.time() * 1000)


def result_key(task: Task) -> str:
    # One object per attempt, so a worker that lost its lease can never overwrite the recorded result.
    return f"results/{task.task_id}-{task.attempts}.mp4"


class StopReason(enum.Enum):
    CANCELED = "canceled"
    LEASE_LOST = "lease lost"
    SHUTDOWN = "shutdown"


class Worker:
    def __init__(
        self,
        *,
        settings: Settings,
        store: TaskStore,
        storage: Storage,
        worker_id: str | None = None,
        host: EngineHost | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.storage = storage
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.host = host or EngineHost(preload=settings.worker_engines or (settings.default_engine,))
        self.fetch_policy = FetchPolicy(allow_private=settings.media_allow_private)
        self.lease_ms = int(settings.lease_seconds * 1000)
        self._last_maintenance = 0.0
        self._stop = threading.Event()
        self._stop_at: float | None = None

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set. A task in progress gets ``drain_seconds`` to finish, then is handed back."""
        self._stop = stop
        log.info("worker %s started", self.worker_id)
        self.host.start()  # pay the engine process start-up before the first task, not during it
        warm_up()
        try:
            while not stop.is_set():
                try:
                    if not self.run_once():
                        self.store.wait_for_work(self.settings.poll_interval)
                except StoreError as exc:
                    # The database may be restarting; keep the worker alive and try again.
                    log.warning("store unavailable: %s", exc)
                    stop.wait(1.0)
        finally:
            self.host.close()
            log.info("worker %s stopped", self.worker_id)

    def run_once(self) -> bool:
        """Claim and process one task; False when there was nothing to do."""
        self.maintain()
        task = self.store.claim(
            self.worker_id,
            now_ms(),
            self.lease_ms,
            models=self.settings.worker_models,
            engines=self.settings.worker_engines,
            max_running_per_account=self.settings.max_running_per_account,
        )
        if task is None:
            return False
        self.process(task)
        return True

    def maintain(self) -> None:
        if time.monotonic() - self._last_maintenance >= MAINTENANCE_EVERY_S:
            self._last_maintenance = time.monotonic()
            run_maintenance(self.settings, self.store, self.storage)
            self.sweep_scratch()

    def sweep_scratch(self) -> int:
        """Delete scratch directories left by workers that died mid-task; return how many were removed.

        A task's directory is ``{task_id}-{attempt}`` under the work directory, which the workers of one
        machine share. It is left behind only when its worker was killed; it is stale once that attempt is
        no longer running (finished, retried as a later attempt, or purged). Directories of attempts still
        running are kept: another live worker on this machine may be using them.
        """
        try:
            entries = list(self.settings.work_dir.iterdir())
        except OSError:
            return 0
        removed = 0
        for entry in entries:
            task_id, _, attempt = entry.name.rpartition("-")
            if not entry.is_dir() or not attempt.isdigit() or not _looks_like_task_id(task_id):
                continue  # not ours: leave it
            task = self.store.get(task_id)
            if task is not None and task.status is TaskStatus.RUNNING and task.attempts == int(attempt):
                continue
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
        if removed:
            log.info("removed %d scratch directories of interrupted tasks", removed)
        return removed

    def _should_stop(self) -> bool:
        if not self._stop.is_set():
            return False
        if self._stop_at is None:
            self._stop_at = time.monotonic()
        return time.monotonic() - self._stop_at >= self.settings.drain_seconds

    def process(self, task: Task) -> None:
        reason: list[StopReason] = []
        done = threading.Event()

        def watch() -> None:
            # Renew the lease every lease/3, and look for cancel requests and lost leases more often.
            renew_every = self.settings.lease_seconds / 3
            last_renew = time.monotonic()
            while not done.wait(min(WATCH_EVERY_S, renew_every)):
                try:
                    state = self.store.heartbeat(task.task_id, self.worker_id, now_ms(), self.lease_ms)
                    last_renew = time.monotonic()
                except VideosynthError as exc:
                    log.warning("heartbeat failed for %s: %s", task.task_id, exc)
                    if time.monotonic() - last_renew > self.settings.lease_seconds:
                        reason.append(StopReason.LEASE_LOST)
                        return
                    continue
                if state is Lease.LOST:
                    reason.append(StopReason.LEASE_LOST)
                    return
                if state is Lease.CANCEL_REQUESTED:
                    reason.append(StopReason.CANCELED)
                    return
                if self._should_stop():
                    reason.append(StopReason.SHUTDOWN)
                    return

        watcher = threading.Thread(target=watch, name=f"lease-{task.task_id[:8]}", daemon=True)
        watcher.start()
        workdir = self.settings.work_dir / f"{task.task_id}-{task.attempts}"
        try:
            self._generate_and_store(task, workdir, lambda: bool(reason))
        except Canceled:
            why = reason[0] if reason else StopReason.CANCELED
            log.info("task %s stopped: %s", task.task_id, why.value)
            if why is StopReason.CANCELED:
                self.store.finish_canceled(task.task_id, self.worker_id, now_ms())
            elif why is StopReason.SHUTDOWN and not self.store.release(task.task_id, self.worker_id):
                # A cancel came in meanwhile: honour it rather than requeue.
                self.store.finish_canceled(task.task_id, self.worker_id, now_ms())
        except StoreError:
            # Its outcome could not be recorded for a whole lease: the task runs again once its lease has
            # expired, and the run loop waits for the store.
            raise
        except VideosynthError as exc:
            log.info("task %s failed: %s %s", task.task_id, exc.kind.value, exc.detail)
            kind, detail = exc.kind, exc.detail
            self._record(lambda: self.store.fail(task.task_id, self.worker_id, now_ms(), kind, detail))
        except Exception:  # a bug here must fail one task, never the worker
            log.exception("task %s crashed the worker loop", task.task_id)
            self._record(
                lambda: self.store.fail(task.task_id, self.worker_id, now_ms(), ErrorKind.INTERNAL, None)
            )
        finally:
            done.set()
            watcher.join()
            shutil.rmtree(workdir, ignore_errors=True)

    def _generate_and_store(self, task: Task, workdir: Path, should_stop: Callable[[], bool]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)

        def fetch_one(index: int, url: str) -> ReferenceImage:
            if should_stop():
                raise Canceled()
            data = self._fetch(url, task.account_id, should_stop)
            # Header checks only: the engine decodes the pixels (once) and reports an undecodable image.
            info = validate_image(data, decode=False)
            path = workdir / f"ref_{index}{info.extension}"
            path.write_bytes(data)
            return ReferenceImage(
                index=index, path=path, width=info.width, height=info.height, format=info.format
            )

        # Downloads wait on the network and Pillow decodes without the GIL, so references load in parallel.
        # The first error in [Image N] order is the one reported.
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=min(FETCH_THREADS, len(task.media_urls))) as pool:
            futures = [pool.submit(fetch_one, i, url) for i, url in enumerate(task.media_urls, start=1)]
            references = [f.result() for f in futures]
        p = task.params
        request = GenerationRequest(
            prompt=task.prompt,
            references=tuple(references),
            resolution=p.resolution,
            ratio=p.ratio,
            width=p.width,
            height=p.height,
            duration=p.duration,
            fps=sizes.FPS,
            seed=p.seed,
            watermark=p.watermark,
        )
        output = workdir / "output.mp4"
        fetched = time.monotonic()
        result = self.host.generate(task.engine, request, output, lambda done, total: should_stop())
        generated = time.monotonic()
        if should_stop():
            raise Canceled()
        key = result_key(task)
        self.storage.put_file(key, output, "video/mp4")
        video_ms = round(result.duration * 1000)
        recorded, retried = self._record(
            lambda: self.store.succeed(task.task_id, self.worker_id, now_ms(), key, video_ms)
        )
        if not recorded:
            if retried and self._recorded_as(task.task_id, key):
                # An earlier try committed but its answer was lost with the connection: the result is ours.
                log.info("task %s SUCCEEDED (recorded by an earlier try)", task.task_id)
                return
            # The task is not ours any more (lease lost, timed out): leave no stray object behind.
            log.warning("task %s finished after losing its lease; result discarded", task.task_id)
            self.storage.delete(key)
            return
        log.info(
            "task %s SUCCEEDED: queued %.3f s, media %.3f s, engine %.3f s, store %.3f s",
            task.task_id,
            (task.scheduled_time_ms or task.submit_time_ms) / 1000 - task.submit_time_ms / 1000,
            fetched - started,
            generated - fetched,
            time.monotonic() - generated,
        )

    def _record(self, finish: Callable[[], bool]) -> tuple[bool, bool]:
        """Run ``finish``, a statement recording the task's outcome if this worker still holds it; return its
        answer and whether it had to be tried again.

        While the store is unavailable (a database restart) it is tried again, for up to a lease: giving up
        at once would leave a finished task RUNNING until its lease expired, and then run it a second time.
        Retrying is safe because the statement is conditional on our lease: a task requeued or claimed
        elsewhere meanwhile is simply not ours any more. Raises StoreError if the store stays unavailable.
        """
        first_failure: float | None = None
        while True:
            try:
                return finish(), first_failure is not None
            except StoreError:
                now = time.monotonic()
                first_failure = now if first_failure is None else first_failure
                if now - first_failure >= self.settings.lease_seconds:
                    raise
                log.warning("task store unavailable; recording the outcome again in %.1f s", RECORD_RETRY_S)
                time.sleep(RECORD_RETRY_S)

    def _recorded_as(self, task_id: str, key: str) -> bool:
        """Whether the task is SUCCEEDED with ``key``; True when the store cannot say, since a stray object
        only costs space where deleting a recorded result would lose the video."""
        try:
            task = self.store.get(task_id)
        except StoreError:
            return True
        return task is not None and task.status is TaskStatus.SUCCEEDED and task.result_key == key

    def _fetch(self, url: str, account_id: str, should_stop: Callable[[], bool]) -> bytes:
        if url.lower().startswith("oss://"):
            key = url[len("oss://") :]
            data = None
            # An upload is usable only by the account whose policy it was sent with.
            if uploads.owner_of(key) == account_id:
                data = self.storage.read_bytes(uploads.STORAGE_PREFIX + key, self.fetch_policy.max_bytes)
            if data is None:
                raise MediaNotFound()
            return data
        return fetch_media(url, self.fetch_policy, should_stop)
