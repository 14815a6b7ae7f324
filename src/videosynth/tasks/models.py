"""Task records and the status machine. Pure data, no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, ClassVar

from videosynth.errors import ErrorKind


class TaskStatus(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELED})

# Every status write in a store is `UPDATE ... WHERE status = <from>`, so these are the only moves that
# can ever happen; the contract tests check that the stores refuse everything else.
# RUNNING -> PENDING is a lease that ran out (or a worker handing a task back on shutdown);
# RUNNING -> CANCELED is our extension (the hosted service cancels PENDING tasks only);
# PENDING -> FAILED is the task timeout.
TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.RUNNING, TaskStatus.CANCELED, TaskStatus.FAILED}),
    TaskStatus.RUNNING: frozenset(
        {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELED, TaskStatus.PENDING}
    ),
    TaskStatus.SUCCEEDED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.CANCELED: frozenset(),
}


def can_transition(current: TaskStatus, new: TaskStatus) -> bool:
    return new in TRANSITIONS[current]


class Lease(enum.Enum):
    """What a heartbeat learns about a RUNNING task."""

    HELD = "held"
    CANCEL_REQUESTED = "cancel_requested"
    LOST = "lost"


class CancelOutcome(enum.Enum):
    CANCELED = "canceled"  # it was PENDING and is CANCELED now
    REQUESTED = "requested"  # it is RUNNING; the worker will stop it
    REFUSED = "refused"  # finished, unknown, or another account's


@dataclass(frozen=True)
class MaintenanceReport:
    requeued: int
    failed_lost: int
    timed_out: int
    purged_result_keys: tuple[str, ...]


@dataclass(frozen=True)
class GenerationParams:
    resolution: str
    ratio: str
    duration: int
    seed: int
    watermark: bool
    width: int
    height: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "resolution": self.resolution,
            "ratio": self.ratio,
            "duration": self.duration,
            "seed": self.seed,
            "watermark": self.watermark,
            "width": self.width,
            "height": self.height,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationParams:
        return cls(
            resolution=str(data["resolution"]),
            ratio=str(data["ratio"]),
            duration=int(data["duration"]),
            seed=int(data["seed"]),
            watermark=bool(data["watermark"]),
            width=int(data["width"]),
            height=int(data["height"]),
        )


@dataclass(frozen=True)
class NewTask:
    """What the API hands the store at submit time."""

    task_id: str
    account_id: str
    api_key_id: str
    request_id: str
    model: str
    engine: str
    prompt: str
    media_urls: tuple[str, ...]
    params: GenerationParams
    submit_time_ms: int
    #: Where this task's own events go besides the account's webhooks (an extension header).
    callback_url: str | None = None


@dataclass(frozen=True)
class Task:
    task_id: str
    account_id: str
    api_key_id: str
    request_id: str
    model: str
    engine: str
    prompt: str
    media_urls: tuple[str, ...]
    params: GenerationParams
    status: TaskStatus
    submit_time_ms: int
    scheduled_time_ms: int | None = None
    end_time_ms: int | None = None
    error_kind: ErrorKind | None = None
    error_detail: str | None = None
    result_key: str | None = None
    #: Seconds of video produced (milliseconds), recorded at SUCCEEDED.
    video_duration_ms: int | None = None
    worker_id: str | None = None
    attempts: int = 0
    cancel_requested: bool = False
    #: Percent done as its worker last recorded it (never decreasing), and what it was doing then.
    progress: int | None = None
    #: A :class:`Stage` or a finer one an engine reported (``"denoising"``, ``"rendering"``).
    stage: str | None = None
    #: A failure recorded by schema 1, which stored the DashScope code and message themselves:
    #: ``(code, message)``. Such rows live until retention purges them; new failures never set this.
    legacy_error: tuple[str, str] | None = None
    #: What a relay engine saved to resume the task elsewhere (its upstream's task id): engine-private,
    #: kept across retries, never shown to clients.
    engine_state: str | None = None
    #: A relayed failure's code as the upstream sent it (``error_kind`` is ``UPSTREAM_FAILED``).
    upstream_code: str | None = None
    callback_url: str | None = None


class Stage(enum.StrEnum):
    """What a RUNNING task is doing: the worker's stages. Engines may report finer stages of generation,
    recorded as the words they are (``Task.stage`` is a str)."""

    FETCHING = "fetching"
    GENERATING = "generating"
    ENCODING = "encoding"
    STORING = "storing"


@dataclass(frozen=True)
class TaskFilter:
    """Filters of ``GET /api/v1/tasks``; times are epoch milliseconds, bounds inclusive."""

    status: TaskStatus | None = None
    model: str | None = None
    task_id: str | None = None
    api_key_id: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None


@dataclass(frozen=True)
class Limits:
    """Per-client limits as set on an account or a key: None inherits (key, then account, then the server's
    default), 0 switches the limit off."""

    submit_rps: int | None = None
    query_rps: int | None = None
    max_queued: int | None = None
    max_stored_mb: int | None = None

    FIELDS: ClassVar[tuple[str, ...]] = ("submit_rps", "query_rps", "max_queued", "max_stored_mb")

    def over(self, fallback: Limits) -> Limits:
        """These limits where set, ``fallback``'s elsewhere."""
        return Limits(
            **{
                f: getattr(self, f) if getattr(self, f) is not None else getattr(fallback, f)
                for f in self.FIELDS
            }
        )


@dataclass(frozen=True)
class StoredInput:
    """Bytes kept for a client: a ``data:`` reference of ``task_id`` (counted while the task waits or runs),
    or an upload (``task_id`` None, counted until ``expires_ms``)."""

    object_key: str
    account_id: str
    api_key_id: str | None
    task_id: str | None
    size: int
    expires_ms: int


#: Limits that set nothing: everything inherited.
INHERIT_ALL = Limits()


@dataclass(frozen=True)
class QueueCap:
    """At most ``limit`` PENDING tasks for a new task's key (``per_key``) or else its account."""

    limit: int
    per_key: bool = False


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    account_id: str
    name: str
    prefix: str
    created_ms: int
    revoked_ms: int | None = None
    #: The key's own overrides, and its account's limits.
    limits: Limits = INHERIT_ALL
    account_limits: Limits = INHERIT_ALL


class EventKind(enum.StrEnum):
    """A status change clients may be told about: the task's new status in lower case. (A task going back
    to PENDING after its worker was lost is not an event: the client sees ``running`` again.)"""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


ALL_EVENT_KINDS: tuple[EventKind, ...] = tuple(EventKind)


@dataclass(frozen=True)
class TaskEvent:
    """One status change, recorded by the store in the transaction that made it. ``seq`` grows with every
    event; within one account, events become visible in ``seq`` order (a reader resuming after a ``seq``
    misses none). ``task`` is the task as the change left it."""

    seq: int
    account_id: str
    task_id: str
    kind: EventKind
    created_ms: int
    task: Task


@dataclass(frozen=True)
class Webhook:
    """An account's endpoint: where, which events, and in which body format (a name the API dialect that
    renders it knows; the domain never looks inside)."""

    webhook_id: str
    account_id: str
    url: str
    events: tuple[EventKind, ...]
    format: str
    include_result: bool
    created_ms: int


@dataclass(frozen=True)
class WebhookSecrets:
    """An account's signing secrets: the current one, and after a rotation the previous one until
    ``previous_until_ms`` (both sign meanwhile, so receivers can switch without losing a delivery)."""

    current: str
    previous: str | None = None
    previous_until_ms: int | None = None

    def signing(self, now_ms: int) -> tuple[str, ...]:
        if self.previous and self.previous_until_ms is not None and now_ms < self.previous_until_ms:
            return (self.current, self.previous)
        return (self.current,)


class DeliveryState(enum.StrEnum):
    PENDING = "pending"  # due now or at ``next_attempt_ms``
    DELIVERED = "delivered"  # a 2xx answer
    FAILED = "failed"  # every try of the schedule failed (a redeliver makes it PENDING again)
    DROPPED = "dropped"  # its webhook was removed before it went out


@dataclass(frozen=True)
class DeliveryAttempt:
    attempt: int
    started_ms: int
    duration_ms: int
    status_code: int | None
    error: str | None


@dataclass(frozen=True)
class Delivery:
    """One event for one endpoint. ``delivery_id`` is the message id receivers see (the same on every try);
    ``tries`` counts the tries since it was (re)queued, ``attempts`` all of them."""

    delivery_id: str
    event: TaskEvent
    webhook_id: str | None  # None: the task's own callback URL
    url: str
    format: str
    include_result: bool
    state: DeliveryState
    attempts: int
    tries: int
    next_attempt_ms: int | None
    created_ms: int
    history: tuple[DeliveryAttempt, ...] = ()
