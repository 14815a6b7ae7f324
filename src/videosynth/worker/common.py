"""What both kinds of task runner share: the clock of the task table, where a result is stored, and the
metrics of a task's stages and outcome."""

from __future__ import annotations

import threading
import time

from videosynth.observability.metrics import TASK_STAGE_SECONDS, TASKS_FINISHED
from videosynth.tasks.models import Task, TaskStatus


def now_ms() -> int:
    return int(time.time() * 1000)


def result_key(task: Task) -> str:
    # One object per attempt, so a worker that lost its lease can never overwrite the recorded result.
    return f"results/{task.task_id}-{task.attempts}.mp4"


def count_finished(task: Task, status: TaskStatus) -> None:
    """Count a task whose final status this worker recorded (a task handed back is not finished)."""
    TASKS_FINISHED.labels(task.engine, status.value).inc()


class StageClock:
    """Times a task's progress stages (``videosynth_task_stage_duration_seconds``): each stage ends when the
    next one starts, the last when the task is let go of."""

    def __init__(self, engine: str, stage: str) -> None:
        self._lock = threading.Lock()
        self._engine = engine
        self._stage = stage
        self._since = time.monotonic()
        self._closed = False

    def enter(self, stage: str) -> None:
        with self._lock:
            if stage != self._stage and not self._closed:
                self._observe(time.monotonic())
                self._stage = stage

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._observe(time.monotonic())
                self._closed = True

    def _observe(self, now: float) -> None:
        TASK_STAGE_SECONDS.labels(self._engine, self._stage).observe(now - self._since)
        self._since = now
