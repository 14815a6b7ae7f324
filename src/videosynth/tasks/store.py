"""The store seam: one Protocol for the task table (which is also the queue), API keys and shared secrets.

Implementations: ``SqliteTaskStore`` (embedded default), ``PostgresTaskStore`` (scale-out). Every
implementation must pass ``tests/test_store_contract.py``.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Protocol

from videosynth.errors import ErrorKind
from videosynth.tasks.models import (
    INHERIT_ALL,
    ApiKey,
    CancelOutcome,
    Delivery,
    DeliveryAttempt,
    Lease,
    Limits,
    MaintenanceReport,
    NewTask,
    QueueCap,
    StoredInput,
    Task,
    TaskEvent,
    TaskFilter,
    Webhook,
    WebhookSecrets,
)


class TaskStore(Protocol):
    def migrate(self) -> int:
        """Bring the schema up to date (idempotent); returns the schema version."""
        ...

    def close(self) -> None: ...

    #: True when ``get`` and ``find_key`` take microseconds and never wait on a network or a lock, so
    #: the API may call them on its event loop instead of paying a thread hand-off (SQLite in WAL mode:
    #: readers never wait for the writer).
    inline_reads: bool

    # --- tasks -------------------------------------------------------------------------------------
    def create(self, task: NewTask) -> None: ...

    def create_many(self, tasks: Sequence[NewTask], caps: Mapping[str, QueueCap] | None = None) -> None:
        """Create several tasks in one transaction: all of them or (an exception) none.

        ``caps`` (by task id): raise ``QueueFull`` rather than leave more PENDING tasks than a cap allows,
        counted atomically with the insert, however many processes submit at once."""
        ...

    def create_idempotent(
        self, task: NewTask, key: str, fingerprint: str, now_ms: int, cap: QueueCap | None = None
    ) -> tuple[str, bool]:
        """Create ``task`` under the account's idempotency ``key``, or find the task the key already names.

        Returns ``(task_id, created)``. A key names one task for 24 hours; used again meanwhile with another
        ``fingerprint`` it raises ``IdempotencyConflict``. Concurrent calls with one key create one task."""
        ...

    def find_idempotent(
        self, account_id: str, key: str, now_ms: int, max_age_ms: int = 24 * 3600 * 1000
    ) -> tuple[str, str] | None:
        """``(fingerprint, task_id)`` the key names, if it was set less than ``max_age_ms`` ago."""
        ...

    def remember_idempotent(
        self, account_id: str, key: str, fingerprint: str, task_id: str, now_ms: int
    ) -> None:
        """Make ``key`` name ``task_id`` from now on (replacing what it named)."""
        ...

    def forget_idempotent(self, account_id: str, key: str) -> None: ...

    def record_stored(self, inputs: Sequence[StoredInput]) -> None:
        """Count bytes kept for clients against their stored-bytes quota (see ``StoredInput``)."""
        ...

    def stored_bytes(self, account_id: str, now_ms: int) -> int:
        """Bytes kept now for the account: its uploads, and the references of its waiting and running
        tasks."""
        ...

    def take_rate(self, scope: str, window_s: int, want: int, limit: int) -> int:
        """Take up to ``want`` of the ``limit`` requests ``scope`` may make in the one-second window
        ``window_s``; returns how many were granted (0 when the window is used up). Shared by every
        process on the store."""
        ...

    def get(self, task_id: str) -> Task | None: ...

    def get_many(self, task_ids: Collection[str]) -> dict[str, Task]:
        """The tasks that exist among ``task_ids``, by id, read at one point in time."""
        ...

    def list(self, account_id: str, flt: TaskFilter, offset: int, limit: int) -> tuple[int, list[Task]]:
        """Tasks of one account, newest first, and the total matching ``flt``."""
        ...

    def page(
        self, account_id: str, after: Task | None, limit: int, *, newest_first: bool = True
    ) -> builtins.list[Task]:
        """Up to ``limit`` tasks of one account in submit order (newest first unless ``newest_first`` is
        False; ties by task id), starting past ``after`` (a task of that page's order) when given: a cursor
        that holds while tasks are added."""
        ...

    def task_counts(self) -> builtins.list[tuple[str, str, str, int, int | None]]:
        """The task table grouped by status, model and engine:
        ``(status, model, engine, tasks, oldest submit_time_ms)``, for the operator's gauges."""
        ...

    def ping(self) -> None:
        """Return when the store answers a query; raise ``StoreError`` when it does not."""
        ...

    def tasks_ahead(self, task: Task) -> int | None:
        """How many PENDING tasks of ``task``'s engine the workers will start before it; None once it is
        no longer PENDING.

        The estimate follows :meth:`claim`'s order as if every account kept taking turns: the account's
        own older tasks, then one task per round from every other account with tasks left, the accounts
        that ``claim`` would serve next going first in each round."""
        ...

    def cancel_pending(self, task_id: str, account_id: str, now_ms: int) -> bool:
        """PENDING -> CANCELED; False when the task is not this account's or not PENDING."""
        ...

    def request_cancel(self, task_id: str, account_id: str, now_ms: int) -> CancelOutcome:
        """Cancel a PENDING task now, or flag a RUNNING one for its worker to stop."""
        ...

    def delete_task(self, task_id: str, account_id: str) -> Task | None:
        """Remove this account's task, whatever its status, with its media; the task as it was (media
        included), or None when there is no such task of this account. A RUNNING task's worker finds its
        lease lost at its next heartbeat and stops; its finish is refused, so it leaves no result behind.
        The caller deletes the task's objects (result, inputs)."""
        ...

    def claim(
        self,
        worker_id: str,
        now_ms: int,
        lease_ms: int,
        *,
        models: Collection[str] | None = None,
        engines: Collection[str] | None = None,
        max_running_per_account: int | None = None,
    ) -> Task | None:
        """Atomically move an eligible PENDING task to RUNNING for this worker, fairly across accounts.

        Eligible: of ``models`` / ``engines`` if given, and of an account with fewer than
        ``max_running_per_account`` RUNNING tasks if given. Fair: the account with the fewest RUNNING tasks
        goes first, then the one served (a task of it started) longest ago; within an account, oldest
        first. So one account's backlog never delays another account's next task."""
        ...

    def heartbeat(
        self,
        task_id: str,
        worker_id: str,
        now_ms: int,
        lease_ms: int,
        *,
        progress: int | None = None,
        stage: str | None = None,
    ) -> Lease:
        """Extend the lease and report whether the task is still ours and whether a cancel was asked.

        With ``progress`` / ``stage``, record them too; the recorded progress never decreases."""
        ...

    def succeed(
        self, task_id: str, worker_id: str, now_ms: int, result_key: str, video_duration_ms: int
    ) -> bool:
        """RUNNING -> SUCCEEDED, only while ``worker_id`` holds the task."""
        ...

    def fail(
        self,
        task_id: str,
        worker_id: str,
        now_ms: int,
        kind: ErrorKind,
        detail: str | None,
        *,
        upstream_code: str | None = None,
    ) -> bool:
        """RUNNING -> FAILED with what went wrong, only while ``worker_id`` holds the task; a relayed
        failure keeps the upstream's own code too."""
        ...

    def save_engine_state(self, task_id: str, worker_id: str, state: str) -> bool:
        """Record what the task's engine needs to resume it (a relay's upstream task id), only while
        ``worker_id`` holds the task; it survives a requeue, so the next attempt resumes instead of
        starting again."""
        ...

    def finish_canceled(self, task_id: str, worker_id: str, now_ms: int) -> bool:
        """RUNNING -> CANCELED after a requested cancel, only while ``worker_id`` holds the task."""
        ...

    def release(self, task_id: str, worker_id: str) -> bool:
        """RUNNING -> PENDING: a stopping worker hands its task back (not counted as an attempt)."""
        ...

    def wait_for_work(self, timeout: float) -> None:
        """Return when new work may be available (a notification), or after ``timeout`` seconds."""
        ...

    def requeue_expired(self, now_ms: int, max_attempts: int) -> tuple[int, int]:
        """RUNNING tasks whose lease ran out go back to PENDING, or to FAILED after ``max_attempts``.

        Returns (requeued, failed)."""
        ...

    def maintain(
        self, now_ms: int, *, max_attempts: int, timeout_ms: int, retention_ms: int
    ) -> MaintenanceReport | None:
        """Requeue lost tasks, fail overdue ones (``ErrorKind.TIMEOUT``), purge expired ones.

        Runs in one process at a time (a lock); returns None when another process holds it. The caller
        deletes ``purged_result_keys`` from storage."""
        ...

    # --- events and webhooks ------------------------------------------------------------------------
    # Every status change to RUNNING, SUCCEEDED, FAILED or CANCELED is recorded as a ``TaskEvent`` in the
    # transaction that makes it, with one ``Delivery`` per endpoint that wants it (the account's webhooks
    # whose events include it, and the task's ``callback_url``). A deleted or purged task takes its events
    # and deliveries with it.
    def events_after(self, account_id: str, after_seq: int, limit: int) -> builtins.list[TaskEvent]:
        """The account's events past ``after_seq``, oldest first. Within an account, an event is never
        visible before one with a smaller ``seq``, so a reader resuming after the last seq it saw misses
        none, on any process."""
        ...

    def last_event_seq(self, account_id: str) -> int:
        """The account's newest event's seq (0 when none): where a reader that wants only new events starts."""
        ...

    def add_webhook(self, hook: Webhook) -> None: ...

    def list_webhooks(self, account_id: str) -> builtins.list[Webhook]: ...

    def remove_webhook(self, account_id: str, webhook_id: str) -> bool:
        """Remove the account's webhook; its deliveries not yet made are dropped. False when no such webhook."""
        ...

    def webhook_secrets(self, account_id: str, factory: Callable[[], str]) -> WebhookSecrets:
        """The account's signing secrets, its first one made by ``factory`` (once, whoever asks first)."""
        ...

    def rotate_webhook_secret(
        self, account_id: str, new_secret: str, now_ms: int, overlap_ms: int
    ) -> WebhookSecrets:
        """Make ``new_secret`` current; the one it replaces keeps signing for ``overlap_ms``."""
        ...

    def claim_deliveries(
        self, worker_id: str, now_ms: int, lease_ms: int, limit: int
    ) -> builtins.list[Delivery]:
        """Up to ``limit`` due deliveries for this worker to make within ``lease_ms``, never two of one task
        to one endpoint at a time, and each only after the task's earlier ones to that endpoint were made
        (or given up). A claim that runs out is claimed again by anyone."""
        ...

    def record_attempt(
        self,
        delivery_id: str,
        worker_id: str,
        attempt: DeliveryAttempt,
        *,
        delivered: bool,
        next_attempt_ms: int | None,
    ) -> bool:
        """Record one try of a delivery this worker claimed: delivered, or due again at ``next_attempt_ms``,
        or (None) given up. False, and nothing recorded, when the claim is no longer this worker's."""
        ...

    def task_deliveries(self, task_id: str, account_id: str) -> builtins.list[Delivery]:
        """The deliveries of this account's task with their attempts, in event order."""
        ...

    def redeliver(self, task_id: str, account_id: str, delivery_id: str, now_ms: int) -> Delivery | None:
        """Make the delivery due now with a fresh schedule (same id); None when the task has no such
        delivery or its webhook was removed."""
        ...

    # --- API keys ----------------------------------------------------------------------------------
    def create_key(
        self, name: str, key_hash: str, prefix: str, now_ms: int, limits: Limits = INHERIT_ALL
    ) -> ApiKey:
        """A new key in a new account of its own, with its own ``limits`` (None: the account's)."""
        ...

    def update_limits(
        self, key_id_or_prefix: str, changes: Mapping[str, int | None], *, on_account: bool = False
    ) -> bool:
        """Set limits (``Limits`` field names; None inherits) on a key, or on its account; False when no
        such key."""
        ...

    def find_key(self, key_hash: str) -> ApiKey | None:
        """The active (not revoked) key with this hash."""
        ...

    def list_keys(self) -> builtins.list[ApiKey]: ...  # ``list`` is a method here

    def revoke_key(self, key_id_or_prefix: str, now_ms: int) -> bool: ...

    # --- shared secrets ----------------------------------------------------------------------------
    def get_or_create_secret(self, name: str, factory: Callable[[], str]) -> str:
        """One value shared by every process on this store (e.g. the URL-signing key)."""
        ...
