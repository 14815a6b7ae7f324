"""What both kinds of task runner share: the clock of the task table, and where a result is stored."""

from __future__ import annotations

import time

from videosynth.tasks.models import Task


def now_ms() -> int:
    return int(time.time() * 1000)


def result_key(task: Task) -> str:
    # One object per attempt, so a worker that lost its lease can never overwrite the recorded result.
    return f"results/{task.task_id}-{task.attempts}.mp4"
