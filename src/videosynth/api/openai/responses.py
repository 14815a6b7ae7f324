"""OpenAI-style bodies: a task as a ``video`` object, a page of them, a deletion."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from videosynth.api.openai.errors import video_failure
from videosynth.tasks.models import Task, TaskStatus

#: The domain's statuses in this wire's words. It has no "canceled": a canceled video is ``failed`` with
#: ``error.code == "canceled"``.
STATUS = {
    TaskStatus.PENDING: "queued",
    TaskStatus.RUNNING: "in_progress",
    TaskStatus.SUCCEEDED: "completed",
    TaskStatus.FAILED: "failed",
    TaskStatus.CANCELED: "failed",
}


def video(task: Task, expires_at: int | None) -> dict[str, Any]:
    """The ``video`` object of ``task``; ``expires_at`` (epoch seconds) is shown once it is completed."""
    p = task.params
    finished = task.status.is_terminal
    body: dict[str, Any] = {
        "id": task.task_id,
        "object": "video",
        "created_at": task.submit_time_ms // 1000,
        "completed_at": task.end_time_ms // 1000 if finished and task.end_time_ms is not None else None,
        "expires_at": expires_at if task.status is TaskStatus.SUCCEEDED else None,
        "model": task.model,
        "progress": 100 if task.status is TaskStatus.SUCCEEDED else min(task.progress or 0, 99),
        "prompt": task.prompt,
        "remixed_from_video_id": None,
        "seconds": str(p.duration),
        "size": f"{p.width}x{p.height}",
        "status": STATUS[task.status],
        "error": None,
    }
    if task.status in (TaskStatus.FAILED, TaskStatus.CANCELED):
        code, message = video_failure(task)
        body["error"] = {"code": code, "message": message}
    return body


def page(videos: Sequence[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": list(videos),
        "first_id": videos[0]["id"] if videos else None,
        "last_id": videos[-1]["id"] if videos else None,
        "has_more": has_more,
    }


def deleted(video_id: str) -> dict[str, Any]:
    return {"id": video_id, "object": "video.deleted", "deleted": True}
