"""The engine process: engines run in a spawned child so a crash or OOM costs one task, not the worker.

Parent and child talk over a pipe with the small messages below. The child keeps engines loaded
between tasks (for GPU engines, loading weights is the expensive part) and turns what an engine makes into
the task's MP4 (``videosynth.worker.video``: frames encoded and counted here, a file engine's MP4 checked).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from videosynth.engines.base import Engine, FrameEngine, GenerationRequest, GenerationResult, ProgressCallback
from videosynth.errors import Canceled, EngineCrashed, ErrorKind, VideosynthError, error_for
from videosynth.observability.logs import bound, configure_logging, current_context
from videosynth.observability.metrics import ENGINE_RESTARTS

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.25


@dataclass(frozen=True)
class EngineSpec:
    """An engine as a model uses it: its name and its options (from the models file), hashable.

    The engine process keeps one built engine per spec: two models on one engine with other options (other
    weights, say) are two engines."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, name: str, options: Mapping[str, Any]) -> EngineSpec:
        return cls(name, tuple(sorted(options.items())))


@dataclass(frozen=True)
class Generate:
    engine: EngineSpec
    request: GenerationRequest
    output_path: str
    #: the worker's log context (the task's id): the child's lines about this generation carry it too
    context: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Loaded:
    """Sent once the child has built its preloaded engines: each spec with None (ready) or why it failed."""

    results: tuple[tuple[EngineSpec, str | None], ...]


@dataclass(frozen=True)
class Cancel:
    pass


@dataclass(frozen=True)
class Shutdown:
    pass


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    stage: str | None = None


@dataclass(frozen=True)
class Done:
    frames: int
    duration: float


@dataclass(frozen=True)
class Failed:
    kind: ErrorKind
    detail: str | None


def _exit_with_parent(parent_pid: int) -> None:
    # A worker killed with SIGKILL cannot stop us; without this an orphaned engine would keep a GPU busy.
    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _child_main(
    conn: Connection, parent_pid: int, preload: tuple[EngineSpec, ...], log_format: str | None = None
) -> None:
    from videosynth.engines.registry import create_engine
    from videosynth.worker.video import make_video, warm_up_encoder

    if log_format is not None:
        # A spawned interpreter starts with no handlers: its lines take the worker's form.
        configure_logging(log_format)
    _exit_with_parent(parent_pid)
    engines: dict[EngineSpec, Engine] = {}
    # Build (import, load weights) and warm up before the first task arrives rather than during it.
    results: list[tuple[EngineSpec, str | None]] = []
    for spec in preload:
        try:
            engines[spec] = create_engine(spec.name, dict(spec.options))
        except Exception as exc:  # the worker claims nothing for it, and says why
            log.exception("could not load engine %s", spec.name)
            results.append((spec, f"{type(exc).__name__}: {exc}"[:500]))
            continue
        try:
            engines[spec].warm_up()
        except Exception:  # a failed warm-up only costs speed; the task will tell if the engine is broken
            log.exception("warm-up of engine %s failed", spec.name)
        results.append((spec, None))
    if any(isinstance(engine, FrameEngine) for engine in engines.values()):
        try:
            warm_up_encoder()
        except Exception:
            log.exception("warm-up of the encoder failed")
    conn.send(Loaded(tuple(results)))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if isinstance(msg, Shutdown):
            return
        if not isinstance(msg, Generate):
            continue
        with bound(**dict(msg.context)):
            try:
                if msg.engine not in engines:
                    engines[msg.engine] = create_engine(msg.engine.name, dict(msg.engine.options))
                on_progress = _ProgressToParent(conn)
                result = make_video(engines[msg.engine], msg.request, Path(msg.output_path), on_progress)
                conn.send(Done(result.frames, result.duration))
            except VideosynthError as exc:
                conn.send(Failed(exc.kind, exc.detail))
            except MemoryError:
                conn.send(Failed(ErrorKind.ENGINE_FAILED, "The engine ran out of memory."))
            except Exception as exc:  # an engine bug must fail the task, not the process
                # The exception text may name files and internals; it goes to the log, the client the kind.
                log.exception("engine failed")
                conn.send(Failed(ErrorKind.ENGINE_FAILED, f"The engine failed ({type(exc).__name__})."))


class _ProgressToParent:
    """The engine's :class:`~videosynth.engines.base.ProgressCallback` in the child: reports go up the pipe
    (at most every ``PROGRESS_EVERY_S``, and whenever the stage changes), a Cancel comes down it.

    It is called from the engine's threads as well as the encoding one (a frame iterator runs on a producer
    thread), and a Connection is not thread-safe: one lock covers every use of the pipe during a task.
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._last_sent = float("-inf")
        self._last_stage: str | None = None
        self._canceled = False

    def __call__(self, done: int, total: int, stage: str | None = None) -> None:
        with self._lock:
            # Once seen, a cancel holds for the rest of the task: every later report raises it again.
            while not self._canceled and self._conn.poll():
                self._canceled = isinstance(self._conn.recv(), Cancel)
            if self._canceled:
                raise Canceled()
            now = time.monotonic()
            if now - self._last_sent >= PROGRESS_EVERY_S or done == total or stage != self._last_stage:
                self._last_sent, self._last_stage = now, stage
                self._conn.send(Progress(done, total, stage))


def _exit_text(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (the kernel's out-of-memory killer sends this)" if -exitcode == signal.SIGKILL else ""
        return f"The engine process was killed by {name}{hint}."
    return f"The engine process exited unexpectedly (exit code {exitcode})."


class EngineHost:
    """Parent side: starts the child on first use and again after it dies."""

    def __init__(
        self,
        preload: tuple[EngineSpec, ...] = (),
        *,
        stop_deadline_s: float = 10.0,
        log_format: str | None = None,
    ) -> None:
        """``log_format``: the form of the child's log lines (None: the child configures no logging)."""
        self._preload = preload
        self._log_format = log_format
        #: each preloaded spec: ("loading" | "ready" | "failed", why it failed)
        self.states: dict[EngineSpec, tuple[str, str | None]] = dict.fromkeys(preload, ("loading", None))
        self._loaded = False
        #: how long an engine may take to honour a stop (cancel, drain, lost lease) before it is killed
        self.stop_deadline_s = stop_deadline_s
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None

    def start(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_child_main,
            args=(child, os.getpid(), self._preload, self._log_format),
            name="videosynth-engine",
            daemon=True,
        )
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        self._loaded = False

    def wait_loaded(self, timeout: float) -> bool:
        """Read the child's load report if it arrives within ``timeout``; True once it has (``states``)."""
        self.start()
        assert self._conn is not None and self._proc is not None
        if self._loaded:
            return True
        try:
            while self._conn.poll(timeout):
                if self._take(self._conn.recv()):
                    return True
        except (EOFError, OSError):
            self._proc.join(timeout=5)
            reason = _exit_text(self._proc.exitcode)
            self._proc = None
            self.states = dict.fromkeys(
                self._preload, ("failed", f"the engine process died while loading: {reason}")
            )
            return True
        return False

    def _take(self, msg: object) -> bool:
        if isinstance(msg, Loaded):
            self.states.update(
                (spec, ("failed", error) if error else ("ready", None)) for spec, error in msg.results
            )
            self._loaded = True
            return True
        return False

    def generate(
        self,
        engine: EngineSpec,
        request: GenerationRequest,
        output_path: Path,
        *,
        on_progress: ProgressCallback,
        stop_requested: Callable[[], bool],
    ) -> GenerationResult:
        """Run one generation: the engine's reports go to ``on_progress``, and the engine is asked to stop
        once ``stop_requested()`` (polled while the engine is silent, too) is true or ``on_progress`` raises
        Canceled; one that has not stopped ``stop_deadline_s`` later is killed. Raises Canceled when stopped.
        """
        self.start()
        assert self._conn is not None and self._proc is not None
        conn, proc = self._conn, self._proc
        try:
            context = tuple(current_context().items())
            conn.send(Generate(engine, request, str(output_path), context))
            cancel_sent_at: float | None = None
            while True:
                if cancel_sent_at is not None and time.monotonic() - cancel_sent_at > self.stop_deadline_s:
                    # Stuck (in a kernel, a C call, a loop that never reports): the only way out is to kill it.
                    log.warning(
                        "engine %s ignored a stop for %.0f s; killing its process",
                        engine.name,
                        self.stop_deadline_s,
                    )
                    self._kill()
                    ENGINE_RESTARTS.labels(engine.name).inc()
                    self.start()  # a fresh one warms up while the worker records the stop
                    raise Canceled()
                if not conn.poll(0.2):
                    if not proc.is_alive():
                        raise EngineCrashed(_exit_text(proc.exitcode))
                    # Look for a stop even when the engine is silent.
                    if cancel_sent_at is None and stop_requested():
                        conn.send(Cancel())
                        cancel_sent_at = time.monotonic()
                    continue
                msg = conn.recv()
                if self._take(msg):  # a restarted child reporting its engines
                    continue
                if isinstance(msg, Progress):
                    try:
                        on_progress(msg.done, msg.total, msg.stage)
                        stop = stop_requested()
                    except Canceled:
                        stop = True
                    if stop and cancel_sent_at is None:
                        conn.send(Cancel())
                        cancel_sent_at = time.monotonic()
                elif isinstance(msg, Done):
                    return GenerationResult(frames=msg.frames, duration=msg.duration)
                elif isinstance(msg, Failed):
                    raise error_for(msg.kind, msg.detail)
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError) as exc:
            proc.join(timeout=5)
            self._proc = None
            ENGINE_RESTARTS.labels(engine.name).inc()  # the next generate starts a new one
            raise EngineCrashed(_exit_text(proc.exitcode)) from exc
        except EngineCrashed:
            self._proc = None
            ENGINE_RESTARTS.labels(engine.name).inc()
            raise

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(timeout=10)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def close(self) -> None:
        if self._proc is None:
            return
        try:
            if self._conn is not None:
                self._conn.send(Shutdown())
        except OSError:
            pass
        self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._proc = None
