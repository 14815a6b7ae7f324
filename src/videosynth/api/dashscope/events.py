"""What this dialect says about an event: webhook bodies (``standard``: the task's query answer;
``dashscope-event``: the hosted service's ``AsyncTaskFinish`` CloudEvent) and Server-Sent Events frames."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from videosynth.api.dashscope.responses import list_entry, task_output
from videosynth.tasks.models import ALL_EVENT_KINDS, Delivery, EventKind, Task, TaskEvent
from videosynth.webhooks.pump import Render, RenderedBody

STANDARD = "standard"
DASHSCOPE_EVENT = "dashscope-event"
#: The body formats a webhook may ask for, and the events each can tell.
FORMATS: dict[str, tuple[EventKind, ...]] = {
    STANDARD: ALL_EVENT_KINDS,
    # The hosted service's event says a task finished; it has no word for one that started.
    DASHSCOPE_EVENT: (EventKind.SUCCEEDED, EventKind.FAILED, EventKind.CANCELED),
}
CLOUDEVENT_TYPE = "dashscope:System:AsyncTaskFinish"
CLOUDEVENT_SOURCE = "acs.dashscope"
Link = Callable[[Task], str | None]


def task_body(task: Task, tz: ZoneInfo, link: Link) -> dict[str, Any]:
    """The ``GET /api/v1/tasks/{id}`` answer for the task as the event left it; its request_id is the
    submit's, so every delivery of an event says the same."""
    return {"request_id": task.request_id, **task_output(task, tz, link(task))}


def _event_time(ms: int | None, tz: ZoneInfo) -> str | None:
    # The event's own format: seconds, no fraction (unlike the query answer's times).
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M:%S")


def cloud_event(delivery: Delivery, tz: ZoneInfo, link: Link) -> dict[str, Any]:
    task = delivery.event.task
    data: dict[str, Any] = {
        "task_id": task.task_id,
        "task_status": task.status.value,
        "start_time": _event_time(task.scheduled_time_ms, tz),
        "end_time": _event_time(task.end_time_ms, tz),
        "request_id": task.request_id,
        "api_key_id": task.api_key_id,
        "region": list_entry(task)["region"],
        "user_api_unique_key": list_entry(task)["user_api_unique_key"],
        "contain_result": delivery.include_result,
    }
    if delivery.include_result:
        data["output_result"] = task_body(task, tz, link)
    return {
        "specversion": "1.0",
        "id": delivery.delivery_id,
        "source": CLOUDEVENT_SOURCE,
        "type": CLOUDEVENT_TYPE,
        "subject": task.task_id,
        "time": datetime.fromtimestamp(delivery.event.created_ms / 1000, UTC).isoformat(
            timespec="milliseconds"
        ),
        "datacontenttype": "application/json",
        "data": data,
    }


def delivery_renderer(tz: ZoneInfo, link: Link) -> Render:
    def render(delivery: Delivery) -> RenderedBody:
        if delivery.format == DASHSCOPE_EVENT:
            return RenderedBody(orjson.dumps(cloud_event(delivery, tz, link)), "application/cloudevents+json")
        return RenderedBody(orjson.dumps(task_body(delivery.event.task, tz, link)), "application/json")

    return render


def sse_frame(event: TaskEvent, tz: ZoneInfo, link: Link) -> bytes:
    """One Server-Sent Event: its id is the event's seq (what ``Last-Event-ID`` resumes after)."""
    data = orjson.dumps(task_body(event.task, tz, link)).decode()
    return f"id: {event.seq}\nevent: task.{event.kind}\ndata: {data}\n\n".encode()
