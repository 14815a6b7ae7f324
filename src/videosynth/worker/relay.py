"""Relayed tasks: many upstream tasks in flight at once, in one worker, each under its own lease.

A relay engine's task spends minutes waiting on an upstream service, so it must not hold a worker slot the
way a generating engine does. :class:`RelayPool` claims relayed tasks up to ``capacity``, and moves each one
through short steps (submit, poll, download) on a few threads: a scheduler thread dispatches the steps that
are due, a lease thread renews every task's lease (every lease/3) and reads the cancel flags of all of them
in one query a second.

What it needs to resume is the task's engine state, saved before the step it protects: ``submitting`` (with
the time) before the submit is sent, the upstream reference once it is known. A worker that dies leaves it
in the table; the next attempt (after the lease ran out) polls the same upstream task, and a submit whose
answer never arrived is looked for upstream before anything is sent again (``RelayEngine.find_submitted``).
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from videosynth import inputs, uploads
from videosynth.engines.base import RelayEngine, RelayMedia, RelayRequest, UpstreamPhase, UpstreamStatus
from videosynth.errors import (
    Canceled,
    MediaNotFound,
    StoreError,
    SubmitAnswerLost,
    UpstreamError,
    UpstreamRefused,
    UpstreamResultUnusable,
    UpstreamSubmitLost,
    UpstreamTaskLost,
    UpstreamThrottled,
    UpstreamUnavailable,
    VideosynthError,
)
from videosynth.media.validate import validate_image
from videosynth.observability.logs import bound
from videosynth.observability.metrics import RELAY_UPSTREAM_REQUESTS, WORKER_HEARTBEATS
from videosynth.settings import Settings
from videosynth.storage.base import Storage
from videosynth.tasks.models import Lease, Stage, Task, TaskStatus
from videosynth.tasks.store import TaskStore
from videosynth.worker.common import StageClock, count_finished, now_ms, result_key

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 256
DEFAULT_THREADS = 16
# Cancel flags of all in-flight tasks are read in one query this often (a cancel lands within it, as it does
# for a generating task); a task's changed progress is written at most once a second.
WATCH_EVERY_S = 0.25
PROGRESS_EVERY_S = 1.0
# An idle pool looks for new relayed tasks this often (a submit is claimed within it).
CLAIM_EVERY_S = 0.1
CLAIMS_PER_ROUND = 32
# Retrying while the upstream is unavailable: no faster than this, no slower than the poll schedule.
RETRY_MIN_S = 0.5
MEDIA_MIMES = {"JPEG": ("image/jpeg", "jpg"), "PNG": ("image/png", "png"), "WEBP": ("image/webp", "webp")}

# The task's percent at each relay stage (SUCCEEDED alone is 100).
SUBMITTING_PERCENT = 2
QUEUED_PERCENT = 5
RUNNING_PERCENT = 10
RUNNING_SHARE = 80
DOWNLOADING_PERCENT = 92
STORING_PERCENT = 96

T = TypeVar("T")
# What an upstream call came to, as videosynth_relay_upstream_requests_total counts it: the first class that
# matches (subclasses before their bases).
_OUTCOMES: tuple[tuple[type[BaseException], str], ...] = (
    (UpstreamThrottled, "throttled"),
    (SubmitAnswerLost, "answer_lost"),
    (UpstreamUnavailable, "unavailable"),
    (UpstreamRefused, "refused"),
    (UpstreamSubmitLost, "submit_lost"),
    (UpstreamTaskLost, "task_lost"),
    (UpstreamResultUnusable, "result_unusable"),
    (UpstreamError, "failed"),
    (Canceled, "canceled"),
)


def upstream_call(operation: str, call: Callable[[], T]) -> T:
    """``call()``, a relay engine's exchange with its upstream, counted by operation and outcome."""
    try:
        result = call()
    except BaseException as exc:
        outcome = next((name for cls, name in _OUTCOMES if isinstance(exc, cls)), "error")
        RELAY_UPSTREAM_REQUESTS.labels(operation, outcome).inc()
        raise
    RELAY_UPSTREAM_REQUESTS.labels(operation, "ok").inc()
    return result


class SubmitGate:
    """The pace of submits to one upstream: as fast as they come until it answers 429, then slower.

    Each 429 doubles the spacing between submits (from 50 ms, up to 10 s) and holds them all for the
    upstream's Retry-After (or the spacing); each accepted submit shortens the spacing by a tenth, so the
    rate settles just under what the upstream accepts. A 429 is never a task failure by itself."""

    MIN_SPACING_S = 0.05
    MAX_SPACING_S = 10.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.spacing_s = 0.0
        self._next_at = 0.0

    def ready_at(self) -> float:
        with self._lock:
            return self._next_at

    def take(self, now: float) -> bool:
        with self._lock:
            if now < self._next_at:
                return False
            self._next_at = now + self.spacing_s
            return True

    def throttled(self, now: float, retry_after_s: float | None) -> None:
        with self._lock:
            self.spacing_s = min(self.MAX_SPACING_S, max(self.MIN_SPACING_S, self.spacing_s * 2))
            self._next_at = max(self._next_at, now + max(retry_after_s or 0.0, self.spacing_s))

    def accepted(self) -> None:
        with self._lock:
            self.spacing_s = self.spacing_s * 0.9 if self.spacing_s > self.MIN_SPACING_S else 0.0


@dataclass
class RelayState:
    """The part of a relayed task that must survive its worker (stored as the task's engine state)."""

    reference: str | None = None  # the upstream's task id once the submit was answered
    submitting_since_ms: int | None = None  # a submit was (perhaps) sent at this time, answer not yet seen

    def dump(self) -> str:
        data: dict[str, Any] = {}
        if self.reference is not None:
            data["reference"] = self.reference
        if self.submitting_since_ms is not None:
            data["submitting_since_ms"] = self.submitting_since_ms
        return json.dumps(data)

    @classmethod
    def load(cls, text: str | None) -> RelayState:
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        reference = data.get("reference")
        since = data.get("submitting_since_ms")
        return cls(
            reference=reference if isinstance(reference, str) else None,
            submitting_since_ms=since if isinstance(since, int) else None,
        )


@dataclass
class InFlight:
    task: Task
    engine: RelayEngine
    gate: SubmitGate
    state: RelayState
    request: RelayRequest | None = None
    polls: int = 0
    #: monotonic time the upstream became unavailable (or stopped knowing the task), while it still is
    trouble_since: float | None = None
    percent: int = SUBMITTING_PERCENT
    stage: str = "submitting"
    recorded: tuple[int, str] | None = None
    renewed_at: float = field(default_factory=time.monotonic)
    written_at: float = float("-inf")  # when its progress was last written
    cancel_requested: bool = False
    done: bool = False
    stages: StageClock = field(init=False)

    def __post_init__(self) -> None:
        self.stages = StageClock(self.task.engine, self.stage)

    def progress(self, percent: int, stage: str) -> None:
        self.percent, self.stage = percent, stage
        self.stages.enter(stage)


class RelayPool:
    def __init__(
        self,
        *,
        settings: Settings,
        store: TaskStore,
        storage: Storage,
        worker_id: str,
        engines: dict[str, RelayEngine],
        record: Callable[[Callable[[], bool]], tuple[bool, bool]],
        finished: Callable[[Task], None] = lambda task: None,
        capacity: int = DEFAULT_CAPACITY,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        """``engines``: the relay engine of each model this pool serves. ``record`` runs a statement that
        finishes a task (retrying while the store is unavailable, as the worker does); ``finished`` is
        called with each task this pool let go of."""
        self.settings = settings
        self.store = store
        self.storage = storage
        self.worker_id = worker_id
        self.engines = engines
        self._gates = {id(engine): SubmitGate() for engine in engines.values()}
        self._record = record
        self._finished = finished
        self.capacity = capacity
        self.lease_ms = int(settings.lease_seconds * 1000)
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="relay-step")
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._inflight: dict[str, InFlight] = {}
        self._due: list[tuple[float, int, str]] = []  # (when, tiebreak, task id)
        self._busy: set[str] = set()
        self._counter = itertools.count()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.polls = 0  # status polls sent, for the bench

    # --- life cycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        for target, name in ((self._schedule, "relay-scheduler"), (self._watch, "relay-leases")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._inflight)

    def stop(self, drain_s: float) -> None:
        """Stop claiming; let the steps under way finish (for up to ``drain_s``), then hand every task back:
        its saved state lets whichever worker claims it next go on where this one stopped."""
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._busy:
                    break
            time.sleep(0.05)
        for thread in self._threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
        with self._lock:
            left = [f for f in self._inflight.values() if not f.done and f.task.task_id not in self._busy]
            for f in left:
                f.done = True
                f.stages.close()
                self._inflight.pop(f.task.task_id, None)
        for f in left:
            try:
                if not self.store.release(f.task.task_id, self.worker_id):
                    self.store.finish_canceled(f.task.task_id, self.worker_id, now_ms())
            except VideosynthError as exc:
                log.warning("could not hand back %s (its lease will run out): %s", f.task.task_id, exc)
        self._executor.shutdown(wait=False, cancel_futures=True)
        log.info("relay pool stopped; %d tasks handed back", len(left))

    # --- claiming and dispatching -------------------------------------------------------------------
    def _claim(self) -> int:
        claimed = 0
        models = tuple(self.engines)
        while claimed < CLAIMS_PER_ROUND and not self._stop.is_set():
            with self._lock:
                if len(self._inflight) >= self.capacity:
                    break
            # Relayed tasks hold no engine slot, so the per-account cap on RUNNING tasks (a share of the
            # slots) does not apply to them; claims still go round the accounts fairly.
            task = self.store.claim(self.worker_id, now_ms(), self.lease_ms, models=models)
            if task is None:
                break
            engine = self.engines[task.model]
            state = RelayState.load(task.engine_state)
            resumed = state.reference is not None
            flight = InFlight(
                task=task,
                engine=engine,
                gate=self._gates[id(engine)],
                state=state,
                percent=QUEUED_PERCENT if resumed else SUBMITTING_PERCENT,
                stage="upstream_queued" if resumed else "submitting",
            )
            if resumed:
                log.info("task %s resumes polling its upstream task", task.task_id)
            with self._lock:
                self._inflight[task.task_id] = flight
                self._push(task.task_id, time.monotonic())
            claimed += 1
        return claimed

    def _push(self, task_id: str, when: float) -> None:
        heapq.heappush(self._due, (when, next(self._counter), task_id))

    def _schedule(self) -> None:
        next_claim = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_claim:
                try:
                    if self._claim() == 0:
                        next_claim = now + CLAIM_EVERY_S
                except StoreError as exc:
                    log.warning("store unavailable: %s", exc)
                    next_claim = now + 1.0
            with self._wake:
                now = time.monotonic()
                deferred = []
                while self._due and self._due[0][0] <= now:
                    when, _, task_id = heapq.heappop(self._due)
                    flight = self._inflight.get(task_id)
                    if flight is None or flight.done or task_id in self._busy:
                        continue
                    if self._needs_submit(flight) and not flight.gate.take(now):
                        deferred.append((flight.gate.ready_at(), task_id))
                        continue
                    self._busy.add(task_id)
                    self._executor.submit(self._run_step, flight)
                for when, task_id in deferred:
                    self._push(task_id, when)
                wait = next_claim - now
                if self._due:
                    wait = min(wait, self._due[0][0] - now)
                self._wake.wait(max(0.005, min(wait, CLAIM_EVERY_S)))

    @staticmethod
    def _needs_submit(flight: InFlight) -> bool:
        return flight.state.reference is None and flight.state.submitting_since_ms is None

    # --- leases ---------------------------------------------------------------------------------------
    def _watch(self) -> None:
        renew_every = self.settings.lease_seconds / 3
        while not self._stop.wait(WATCH_EVERY_S):
            with self._lock:
                flights = [f for f in self._inflight.values() if not f.done]
            if not flights:
                continue
            try:
                current = self.store.get_many([f.task.task_id for f in flights])
            except VideosynthError as exc:
                log.warning("could not read the relayed tasks: %s", exc)
                current = {}
            now = time.monotonic()
            for flight in flights:
                seen = current.get(flight.task.task_id)
                if seen is not None and seen.cancel_requested and not flight.cancel_requested:
                    flight.cancel_requested = True
                    self._wake_now(flight)
                news = (flight.percent, flight.stage)
                changed = news != flight.recorded and now - flight.written_at >= PROGRESS_EVERY_S
                if not changed and now - flight.renewed_at < renew_every:
                    continue
                try:
                    lease = self.store.heartbeat(
                        flight.task.task_id,
                        self.worker_id,
                        now_ms(),
                        self.lease_ms,
                        progress=news[0] if changed else None,
                        stage=news[1] if changed else None,
                    )
                except VideosynthError as exc:
                    log.warning("heartbeat failed for %s: %s", flight.task.task_id, exc)
                    continue
                WORKER_HEARTBEATS.inc()
                flight.renewed_at = now
                if changed:
                    flight.recorded, flight.written_at = news, now
                if lease is Lease.LOST:
                    log.warning("task %s: lease lost; left to whoever holds it now", flight.task.task_id)
                    self._let_go(flight)
                elif lease is Lease.CANCEL_REQUESTED and not flight.cancel_requested:
                    flight.cancel_requested = True
                    self._wake_now(flight)

    def _wake_now(self, flight: InFlight) -> None:
        with self._wake:
            self._push(flight.task.task_id, time.monotonic())
            self._wake.notify()

    def _let_go(self, flight: InFlight) -> None:
        with self._lock:
            flight.done = True
            self._inflight.pop(flight.task.task_id, None)
        flight.stages.close()
        shutil.rmtree(self._workdir(flight), ignore_errors=True)
        try:
            self._finished(flight.task)
        except Exception:  # clean-up only: never the reason a task is lost
            log.exception("clean-up after %s failed", flight.task.task_id)

    # --- steps ----------------------------------------------------------------------------------------
    def _run_step(self, flight: InFlight) -> None:
        with bound(task_id=flight.task.task_id, account=flight.task.account_id):
            self._take_step(flight)

    def _take_step(self, flight: InFlight) -> None:
        delay: float | None = None
        try:
            delay = self._step(flight)
        except Canceled:
            delay = 0.0
        except StoreError as exc:
            log.warning("task %s: store unavailable: %s", flight.task.task_id, exc)
            delay = 1.0
        except UpstreamThrottled as exc:
            # Slower, never failed: a 429 says the upstream is busy, not that the task is bad.
            flight.gate.throttled(time.monotonic(), exc.retry_after_s)
            delay = max(exc.retry_after_s or 0.0, flight.engine.poll_delay(flight.polls), RETRY_MIN_S)
        except UpstreamUnavailable as exc:
            delay = self._trouble(flight, exc)
        except VideosynthError as exc:
            self._fail(flight, exc)
        except Exception:  # a bug here must fail one task, never the pool
            log.exception("task %s crashed a relay step", flight.task.task_id)
            self._fail(flight, VideosynthError())
        finally:
            with self._wake:
                self._busy.discard(flight.task.task_id)
                if delay is not None and not flight.done:
                    self._push(flight.task.task_id, time.monotonic() + delay)
                self._wake.notify()

    def _trouble(self, flight: InFlight, exc: UpstreamError) -> float | None:
        """The upstream is unavailable (or does not know the task): retry, until it has been so for longer
        than the engine's bound."""
        now = time.monotonic()
        if flight.trouble_since is None:
            flight.trouble_since = now
        if now - flight.trouble_since > flight.engine.give_up_after_s:
            log.info("task %s: giving up on the upstream: %s", flight.task.task_id, exc.detail)
            self._fail(flight, exc)
            return None
        log.info("task %s: upstream trouble, retrying: %s", flight.task.task_id, exc.detail)
        return max(RETRY_MIN_S, min(flight.engine.poll_delay(flight.polls), 2.0 ** min(flight.polls, 4)))

    def _save(self, flight: InFlight, state: RelayState) -> None:
        if not self.store.save_engine_state(flight.task.task_id, self.worker_id, state.dump()):
            self._let_go(flight)
            raise Canceled()  # not ours any more: nothing more to do for it
        flight.state = state

    def _step(self, flight: InFlight) -> float | None:
        """One exchange with the upstream; the delay before the next step, None when the task is done."""
        engine, state = flight.engine, flight.state
        if flight.cancel_requested:
            self._cancel(flight)
            return None
        if flight.request is None:
            flight.request = self._request(flight.task)
        request = flight.request
        if state.reference is None and state.submitting_since_ms is not None:
            # Resumed (or the answer was lost) between sending a submit and hearing back.
            since = state.submitting_since_ms
            found = upstream_call("find_submitted", lambda: engine.find_submitted(request, since, now_ms()))
            if found is None:
                self._save(flight, RelayState())
                return 0.0  # nothing was created: submit (again)
            self._save(flight, RelayState(reference=found))
            return 0.0
        if state.reference is None:
            self._save(flight, RelayState(submitting_since_ms=now_ms()))
            try:
                reference = upstream_call("submit", lambda: engine.submit(request))
            except SubmitAnswerLost:
                raise  # the saved state sends the next step looking for it upstream
            except UpstreamError:
                self._save(flight, RelayState())  # certainly not created: a plain submit next time
                raise
            flight.gate.accepted()
            self._save(flight, RelayState(reference=reference))
            flight.trouble_since = None
            flight.progress(QUEUED_PERCENT, "upstream_queued")
            return engine.poll_delay(0)
        reference = state.reference
        status = upstream_call("status", lambda: engine.status(reference))
        self.polls += 1
        flight.polls += 1
        return self._follow(flight, status)

    def _follow(self, flight: InFlight, status: UpstreamStatus) -> float | None:
        engine, task = flight.engine, flight.task
        phase = status.phase
        if phase is UpstreamPhase.UNKNOWN:
            return self._trouble(flight, UpstreamTaskLost("the upstream does not know the task"))
        flight.trouble_since = None
        if phase is UpstreamPhase.QUEUED:
            flight.progress(max(flight.percent, QUEUED_PERCENT), "upstream_queued")
            return engine.poll_delay(flight.polls)
        if phase is UpstreamPhase.RUNNING:
            share = (min(max(status.progress or 0, 0), 100) * RUNNING_SHARE) // 100
            flight.progress(max(flight.percent, RUNNING_PERCENT + share), "upstream_running")
            return engine.poll_delay(flight.polls)
        if phase is UpstreamPhase.FAILED:
            raise UpstreamError(status.message or None, upstream_code=status.code)
        if phase is UpstreamPhase.CANCELED:
            if flight.cancel_requested:
                self._cancel(flight)
                return None
            raise UpstreamError(status.message or "the upstream canceled the task", upstream_code=status.code)
        self._store_result(flight, status)
        log.info("task %s SUCCEEDED (relayed, %d polls)", task.task_id, flight.polls)
        return None

    def _workdir(self, flight: InFlight) -> Any:
        return self.settings.work_dir / f"{flight.task.task_id}-{flight.task.attempts}"

    def _store_result(self, flight: InFlight, status: UpstreamStatus) -> None:
        task = flight.task
        flight.progress(DOWNLOADING_PERCENT, "downloading")
        workdir = self._workdir(flight)
        workdir.mkdir(parents=True, exist_ok=True)
        video = workdir / "output.mp4"
        try:
            upstream_call(
                "download",
                lambda: flight.engine.download(status, video, lambda: flight.done or flight.cancel_requested),
            )
            flight.progress(STORING_PERCENT, Stage.STORING)
            key = result_key(task)
            self.storage.put_file(key, video, "video/mp4")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        seconds = status.video_seconds if status.video_seconds is not None else float(task.params.duration)
        recorded, _ = self._record(
            lambda: self.store.succeed(task.task_id, self.worker_id, now_ms(), key, round(seconds * 1000))
        )
        if recorded:
            count_finished(task, TaskStatus.SUCCEEDED)
        else:
            current = self.store.get(task.task_id)
            if current is None or current.result_key != key:
                log.warning("task %s finished after losing its lease; result discarded", task.task_id)
                self.storage.delete(key)
            else:
                count_finished(task, TaskStatus.SUCCEEDED)  # recorded by an earlier try
        self._let_go(flight)

    def _cancel(self, flight: InFlight) -> None:
        task = flight.task
        reference = flight.state.reference
        if reference is not None:
            try:
                if not upstream_call("cancel", lambda: flight.engine.cancel(reference)):
                    log.info("task %s canceled here; its upstream task was already running", task.task_id)
            except UpstreamError as exc:
                log.info("task %s canceled here; the upstream cancel failed: %s", task.task_id, exc.detail)
        if self._record(lambda: self.store.finish_canceled(task.task_id, self.worker_id, now_ms()))[0]:
            count_finished(task, TaskStatus.CANCELED)
        self._let_go(flight)

    def _fail(self, flight: InFlight, exc: VideosynthError) -> None:
        task = flight.task
        code = exc.upstream_code if isinstance(exc, UpstreamError) else None
        kind = exc.kind
        log.info("task %s failed: %s %s %s", task.task_id, kind.value, code or "", exc.detail or "")
        recorded, _ = self._record(
            lambda: self.store.fail(
                task.task_id, self.worker_id, now_ms(), kind, exc.detail, upstream_code=code
            )
        )
        if recorded:
            count_finished(task, TaskStatus.FAILED)
        self._let_go(flight)

    # --- the request --------------------------------------------------------------------------------
    def _request(self, task: Task) -> RelayRequest:
        media = tuple(self._media(task, i, url) for i, url in enumerate(task.media_urls, start=1))
        p = task.params
        return RelayRequest(
            model=task.model,
            prompt=task.prompt,
            media=media,
            resolution=p.resolution,
            ratio=p.ratio,
            duration=p.duration,
            seed=p.seed,
            watermark=p.watermark,
        )

    def _media(self, task: Task, index: int, url: str) -> RelayMedia:
        if url.startswith(("http://", "https://")):
            return RelayMedia(index=index, url=url)  # the upstream downloads it under its own rules
        max_bytes = 20 * 1024 * 1024
        name = f"reference-{index}"
        if url.startswith(inputs.SCHEME):
            data = inputs.read(self.storage, task.task_id, url, max_bytes)
        elif url.lower().startswith("oss://"):
            key = url[len("oss://") :]
            name = key.rsplit("/", 1)[-1] or name
            data = None
            if uploads.owner_of(key) == task.account_id:
                data = self.storage.read_bytes(uploads.STORAGE_PREFIX + key, max_bytes)
        else:
            return RelayMedia(index=index, url=url)
        if data is None:
            raise MediaNotFound()
        info = validate_image(data, decode=False)
        mime, extension = MEDIA_MIMES.get(info.format, ("application/octet-stream", "bin"))
        if "." not in name:
            name = f"{name}.{extension}"
        return RelayMedia(index=index, data=data, mime=mime, filename=name)
