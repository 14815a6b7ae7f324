"""DashScope response bodies: the task as ``output`` (and ``usage``), time strings, list entries."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from videosynth import sizes
from videosynth.api.dashscope.errors import task_failure
from videosynth.tasks.models import Stage, Task, TaskStatus


def wire_time(ms: int | None, tz: ZoneInfo) -> str | None:
    """``YYYY-MM-DD HH:mm:ss.SSS`` in the configured zone (SDK v2 requires strings, not numbers)."""
    if ms is None:
        return None
    return _second(ms // 1000, tz) + f"{ms % 1000:03d}"


@functools.lru_cache(maxsize=4096)
def _second(seconds: int, tz: ZoneInfo) -> str:
    # A task's three times repeat on every poll of it; formatting through the zone is most of the cost.
    return datetime.fromtimestamp(seconds, tz).strftime("%Y-%m-%d %H:%M:%S.")


def _seconds(ms: int) -> int | float:
    # Whole seconds as integers, as the hosted service writes them; clients that bill from it accept both.
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


def usage(task: Task) -> dict[str, Any]:
    """The ``usage`` of a SUCCEEDED task: billed seconds, tier and ratio."""
    p = task.params
    produced_ms = task.video_duration_ms if task.video_duration_ms is not None else p.duration * 1000
    return {
        "duration": p.duration,
        "input_video_duration": 0,
        "output_video_duration": _seconds(produced_ms),
        "video_count": 1,
        "SR": sizes.tier(p.resolution),
        "ratio": p.ratio,
    }


def submitted(task_id: str) -> dict[str, Any]:
    return {"output": {"task_status": TaskStatus.PENDING.value, "task_id": task_id}}


def task_output(
    task: Task, tz: ZoneInfo, video_url: str | None, tasks_ahead: int | None = None
) -> dict[str, Any]:
    """The ``GET /api/v1/tasks/{id}`` body (without request_id); ``tasks_ahead`` for a PENDING task."""
    output: dict[str, Any] = {"task_id": task.task_id, "task_status": task.status.value}
    for name, ms in (
        ("submit_time", task.submit_time_ms),
        ("scheduled_time", task.scheduled_time_ms),
        ("end_time", task.end_time_ms),
    ):
        text = wire_time(ms, tz)
        if text is not None:
            output[name] = text
    output["orig_prompt"] = task.prompt
    # Our extensions (clients that do not know them ignore them): percent done, never decreasing and 100
    # only at SUCCEEDED, and what a PENDING or RUNNING task is doing.
    if task.status is TaskStatus.SUCCEEDED:
        output["progress"] = 100
    else:
        output["progress"] = min(task.progress or 0, 99)
    if task.status is TaskStatus.PENDING:
        output["stage"] = "queued"
        if tasks_ahead is not None:
            output["queue_position"] = tasks_ahead
    elif task.status is TaskStatus.RUNNING:
        output["stage"] = str(task.stage or Stage.FETCHING)
    body: dict[str, Any] = {"output": output}
    if task.status is TaskStatus.SUCCEEDED:
        output["video_url"] = video_url or ""
        body["usage"] = usage(task)
    elif task.status is TaskStatus.FAILED:
        output["code"], output["message"] = task_failure(task)
    return body


def unknown_output(task_id: str) -> dict[str, Any]:
    return {"output": {"task_id": task_id, "task_status": "UNKNOWN"}}


def list_page(total: int, page_no: int, page_size: int, tasks: list[Task]) -> dict[str, Any]:
    return {
        "total": total,
        "total_page": -(-total // page_size) if total else 0,
        "page_no": page_no,
        "page_size": page_size,
        "data": [list_entry(t) for t in tasks],
    }


def list_entry(task: Task) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "api_key_id": task.api_key_id,
        "caller_parent_id": task.account_id,
        "caller_uid": task.account_id,
        "gmt_create": task.submit_time_ms,
        "model_name": task.model,
        "region": "local",
        "request_id": task.request_id,
        "status": task.status.value,
        "task_id": task.task_id,
        "user_api_unique_key": f"apikey:v1:aigc:video-generation:video-synthesis:{task.model}",
    }
    if task.scheduled_time_ms is not None:
        entry["start_time"] = task.scheduled_time_ms
    if task.end_time_ms is not None:
        entry["end_time"] = task.end_time_ms
    return entry
