"""The worker loop: claim -> fetch and validate media -> generate in the engine process -> store -> finish.

A heartbeat thread renews the task's lease and watches for a cancel request; the engine is asked to stop
(within one progress step) when the task is canceled, when the lease is lost, or when a stopping worker's
drain time runs out, in which case the task is handed back to the queue.
"""

from __future__ import annotations

import contextvars
import enum
import logging
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from videosynth import inputs, sizes, uploads
from videosynth.catalog import Catalog, ModelSpec
from videosynth.engines.base import GenerationRequest, ReferenceImage, RelayEngine
from videosynth.engines.registry import create_engine, is_relay
from videosynth.errors import (
    Canceled,
    EngineError,
    ErrorKind,
    MediaNotFound,
    ModelNotFound,
    StoreError,
    VideosynthError,
)
from videosynth.maintenance import EVERY_S as MAINTENANCE_EVERY_S
from videosynth.maintenance import run_maintenance
from videosynth.media.fetch import FetchPolicy, fetch_media, warm_up
from videosynth.media.validate import validate_image
from videosynth.observability.logs import bound
from videosynth.observability.metrics import WORKER_HEARTBEATS
from videosynth.settings import Settings
from videosynth.storage.base import Storage
from videosynth.tasks.models import Lease, Stage, Task, TaskStatus
from videosynth.tasks.store import TaskStore
from videosynth.worker.common import StageClock, count_finished, now_ms, result_key
from videosynth.worker.host import EngineHost, EngineSpec
from videosynth.worker.relay import RelayPool

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


# Percent done at each stage; SUCCEEDED alone is 100, so none of these reaches it.
FETCHED_PERCENT = 5
GENERATED_SHARE = 90
STORING_PERCENT = 96
# Progress rides on the heartbeat (four a second): at most one changed value a second is written.
PROGRESS_RECORD_EVERY_S = 1.0


# An engine's own stage names go to clients as they are: short lowercase words only.
_ENGINE_STAGE = re.compile(r"[a-z][a-z_]{0,23}")


def engine_stage(stage: str | None) -> str:
    """The stage to record for an engine's report: its own word where it is one, else GENERATING."""
    if stage is None:
        return Stage.GENERATING
    if _ENGINE_STAGE.fullmatch(stage):
        return stage
    log.warning("engine stage %.40r ignored: stages are short lowercase words", stage)
    return Stage.GENERATING


class ProgressMeter:
    """What a task is doing: set by the thread that runs it, recorded by the one that holds its lease."""

    def __init__(self, engine: str = "unknown") -> None:
        self._lock = threading.Lock()
        self._state: tuple[int, str] = (0, Stage.FETCHING)
        self._recorded: tuple[int, str] | None = None
        self._recorded_at = float("-inf")
        self._stages = StageClock(engine, Stage.FETCHING)

    def update(self, stage: str, percent: int) -> None:
        self._stages.enter(stage)
        with self._lock:
            self._state = (max(self._state[0], percent), stage)

    def finish(self) -> None:
        """The task is over (whatever its outcome): its last stage ends now."""
        self._stages.close()

    def news(self, now: float) -> tuple[int, str] | None:
        """The state to record now, if it changed and the last record is old enough."""
        with self._lock:
            if self._state == self._recorded or now - self._recorded_at < PROGRESS_RECORD_EVERY_S:
                return None
            return self._state

    def recorded(self, state: tuple[int, str], at: float) -> None:
        with self._lock:
            self._recorded, self._recorded_at = state, at


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
        catalog: Catalog | None = None,
        report: Callable[[dict[str, Any]], None] | None = None,
        environ: Mapping[str, str] | None = None,
        relay_capacity: int | None = None,
    ) -> None:
        """``environ``: where relay engines find the credentials their options name (from the edge)."""
        self.settings = settings
        self.store = store
        self.storage = storage
        self.catalog = catalog or Catalog.default(settings.default_engine, settings.model_routes)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.host = host or EngineHost(
            preload=self._engines_to_preload(),
            stop_deadline_s=settings.engine_stop_seconds,
            log_format=settings.log_format,
        )
        self.fetch_policy = FetchPolicy(allow_private=settings.media_allow_private)
        self.lease_ms = int(settings.lease_seconds * 1000)
        self._last_maintenance = 0.0
        self._stop = threading.Event()
        self._stop_at: float | None = None
        self._report = report
        #: the models whose engines loaded: all this worker claims (None until the engines reported)
        self.runnable: tuple[str, ...] | None = None
        self._environ = environ or {}
        self._relay_capacity = relay_capacity
        self.relay: RelayPool | None = None
        self._relay_states: dict[EngineSpec, tuple[str, str | None]] = {}

    def _served_models(self, *, relayed: bool = False) -> list[ModelSpec]:
        """The models this worker serves: those its engine process runs, or (``relayed``) those it relays."""
        models, engines = self.settings.worker_models, self.settings.worker_engines
        return [
            m
            for m in self.catalog
            if (models is None or m.name in models)
            and (engines is None or m.engine in engines)
            and is_relay(m.engine) == relayed
        ]

    def _engines_to_preload(self) -> tuple[EngineSpec, ...]:
        specs = {EngineSpec.of(m.engine, m.options) for m in self._served_models()}
        return tuple(sorted(specs, key=repr))

    def status(self) -> dict[str, Any]:
        """This worker's engines, the models each serves here, and whether each loaded (for ``/readyz``)."""
        engines = []
        served_models = self._served_models() + self._served_models(relayed=True)
        for spec, (state, detail) in {**self.host.states, **self._relay_states}.items():
            served = [m.name for m in served_models if EngineSpec.of(m.engine, m.options) == spec]
            engines.append({"engine": spec.name, "models": served, "state": state, "detail": detail})
        return {"worker_id": self.worker_id, "engines": engines}

    def _start_relay(self) -> None:
        """Build the relay engines of the relayed models and start the pool that runs their tasks."""
        built: dict[EngineSpec, RelayEngine] = {}
        engines: dict[str, RelayEngine] = {}
        for model in self._served_models(relayed=True):
            spec = EngineSpec.of(model.engine, model.options)
            if spec in self._relay_states and spec not in built:
                continue  # failed already
            if spec not in built:
                try:
                    engine = create_engine(spec.name, dict(spec.options), environ=self._environ)
                except EngineError as exc:
                    log.error("relay engine %s for %s did not start: %s", spec.name, model.name, exc)
                    self._relay_states[spec] = ("failed", str(exc))
                    continue
                if not isinstance(engine, RelayEngine):
                    self._relay_states[spec] = ("failed", f"{spec.name} is not a relay engine")
                    continue
                built[spec] = engine
                self._relay_states[spec] = ("ready", None)
            engines[model.name] = built[spec]
        if not engines:
            return
        self.relay = RelayPool(
            settings=self.settings,
            store=self.store,
            storage=self.storage,
            worker_id=self.worker_id,
            engines=engines,
            record=self._record,
            finished=self._drop_inputs_if_finished,
            **({"capacity": self._relay_capacity} if self._relay_capacity else {}),
        )
        self.relay.start()
        log.info("worker %s relays %s", self.worker_id, ", ".join(sorted(engines)))

    def _engines_loaded(self) -> None:
        ready = {spec for spec, (state, _) in self.host.states.items() if state == "ready"}
        self.runnable = tuple(
            m.name for m in self._served_models() if EngineSpec.of(m.engine, m.options) in ready
        )
        for spec, (state, detail) in self.host.states.items():
            if state != "ready":
                log.error("worker %s claims nothing for engine %s: %s", self.worker_id, spec.name, detail)
        if not self.runnable and self.relay is None:
            log.error("worker %s has no engine that loaded; it claims no tasks", self.worker_id)
        if self._report is not None:
            self._report(self.status())

    def engine_for(self, task: Task) -> EngineSpec:
        """The task's engine with the options its model has here (an unknown model: the engine's defaults)."""
        try:
            spec = self.catalog.get(task.model)
        except ModelNotFound:
            return EngineSpec(task.engine)
        if spec.engine != task.engine:  # re-routed since the submit: run what the task was accepted for
            return EngineSpec(task.engine)
        return EngineSpec.of(spec.engine, spec.options)

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set. A task in progress gets ``drain_seconds`` to finish, then is handed back."""
        self._stop = stop
        log.info("worker %s started", self.worker_id)
        generating = bool(self._served_models())
        if generating:
            self.host.start()  # pay the engine process start-up before the first task, not during it
        warm_up()
        try:
            self._start_relay()
            # Claim only once the engines have loaded, and only for those that did: a GPU engine may take
            # minutes, and an engine that cannot load must not fail every task routed to it.
            while generating and not stop.is_set() and not self.host.wait_loaded(0.5):
                pass
            self._engines_loaded()
            while not stop.is_set() and not generating:
                # Relaying only: the pool does the work; this thread keeps the housekeeping going.
                try:
                    self.maintain()
                except StoreError as exc:
                    log.warning("store unavailable: %s", exc)
                stop.wait(1.0)
            while not stop.is_set():
                try:
                    if not self.run_once():
                        self.store.wait_for_work(self.settings.poll_interval)
                except StoreError as exc:
                    # The database may be restarting; keep the worker alive and try again.
                    log.warning("store unavailable: %s", exc)
                    stop.wait(1.0)
        finally:
            if self.relay is not None:
                self.relay.stop(self.settings.drain_seconds)
            self.host.close()
            log.info("worker %s stopped", self.worker_id)

    def run_once(self) -> bool:
        """Claim and process one task; False when there was nothing to do."""
        self.maintain()
        task = self.store.claim(
            self.worker_id,
            now_ms(),
            self.lease_ms,
            models=self.runnable if self.runnable is not None else self.settings.worker_models,
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
        with bound(task_id=task.task_id, account=task.account_id):
            self._process(task)

    def _process(self, task: Task) -> None:
        reason: list[StopReason] = []
        done = threading.Event()
        meter = ProgressMeter(task.engine)

        def watch() -> None:
            # Renew the lease every lease/3, and look for cancel requests and lost leases more often.
            renew_every = self.settings.lease_seconds / 3
            last_renew = time.monotonic()
            while not done.wait(min(WATCH_EVERY_S, renew_every)):
                news = meter.news(time.monotonic())
                try:
                    state = self.store.heartbeat(
                        task.task_id,
                        self.worker_id,
                        now_ms(),
                        self.lease_ms,
                        progress=news[0] if news else None,
                        stage=news[1] if news else None,
                    )
                    last_renew = time.monotonic()
                    WORKER_HEARTBEATS.inc()
                    if news:
                        meter.recorded(news, last_renew)
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

        # In a copy of this context, so the watcher's log lines name the task too.
        watcher = threading.Thread(
            target=contextvars.copy_context().run,
            args=(watch,),
            name=f"lease-{task.task_id[:8]}",
            daemon=True,
        )
        watcher.start()
        workdir = self.settings.work_dir / f"{task.task_id}-{task.attempts}"
        try:
            self._generate_and_store(task, workdir, lambda: bool(reason), meter)
        except Canceled:
            why = reason[0] if reason else StopReason.CANCELED
            log.info("task %s stopped: %s", task.task_id, why.value)
            canceled = why is StopReason.CANCELED
            if why is StopReason.SHUTDOWN and not self.store.release(task.task_id, self.worker_id):
                canceled = True  # a cancel came in meanwhile: honour it rather than requeue
            if canceled and self.store.finish_canceled(task.task_id, self.worker_id, now_ms()):
                count_finished(task, TaskStatus.CANCELED)
        except StoreError:
            # Its outcome could not be recorded for a whole lease: the task runs again once its lease has
            # expired, and the run loop waits for the store.
            raise
        except VideosynthError as exc:
            log.info("task %s failed: %s %s", task.task_id, exc.kind.value, exc.detail)
            kind, detail = exc.kind, exc.detail
            if self._record(lambda: self.store.fail(task.task_id, self.worker_id, now_ms(), kind, detail))[0]:
                count_finished(task, TaskStatus.FAILED)
        except Exception:  # a bug here must fail one task, never the worker
            log.exception("task %s crashed the worker loop", task.task_id)
            if self._record(
                lambda: self.store.fail(task.task_id, self.worker_id, now_ms(), ErrorKind.INTERNAL, None)
            )[0]:
                count_finished(task, TaskStatus.FAILED)
        finally:
            meter.finish()
            done.set()
            watcher.join()
            shutil.rmtree(workdir, ignore_errors=True)
            self._drop_inputs_if_finished(task)

    def _drop_inputs_if_finished(self, task: Task) -> None:
        keys = inputs.keys_of(task.task_id, task.media_urls)
        if not keys:
            return
        # Only once the task is finished: a task handed back or taken over by another worker still needs
        # them. Housekeeping sweeps whatever this misses.
        try:
            current = self.store.get(task.task_id)
        except VideosynthError as exc:
            log.warning("inputs of %s left to housekeeping: %s", task.task_id, exc)
            return
        if current is None or current.status.is_terminal:
            inputs.discard(self.storage, keys)

    def _generate_and_store(
        self, task: Task, workdir: Path, should_stop: Callable[[], bool], meter: ProgressMeter
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)

        def fetch_one(index: int, url: str) -> ReferenceImage:
            if should_stop():
                raise Canceled()
            data = self._fetch(url, task, should_stop)
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
        meter.update(Stage.GENERATING, FETCHED_PERCENT)

        def on_engine_progress(done: int, total: int, stage: str | None = None) -> None:
            if total > 0:
                share = min(max(done, 0), total) / total
                meter.update(engine_stage(stage), FETCHED_PERCENT + int(share * GENERATED_SHARE))

        result = self.host.generate(
            self.engine_for(task), request, output, on_progress=on_engine_progress, stop_requested=should_stop
        )
        generated = time.monotonic()
        if should_stop():
            raise Canceled()
        meter.update(Stage.STORING, STORING_PERCENT)
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
                count_finished(task, TaskStatus.SUCCEEDED)
                return
            # The task is not ours any more (lease lost, timed out): leave no stray object behind.
            log.warning("task %s finished after losing its lease; result discarded", task.task_id)
            self.storage.delete(key)
            return
        count_finished(task, TaskStatus.SUCCEEDED)
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

    def _fetch(self, url: str, task: Task, should_stop: Callable[[], bool]) -> bytes:
        account_id = task.account_id
        if url.startswith(inputs.SCHEME):
            stored = inputs.read(self.storage, task.task_id, url, self.fetch_policy.max_bytes)
            if stored is None:
                raise MediaNotFound()
            return stored
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
