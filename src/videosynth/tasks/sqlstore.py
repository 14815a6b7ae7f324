"""What the SQLite and PostgreSQL stores share: the queries (written with ``?`` placeholders) and row mapping.

A subclass supplies connections, transactions, the dialect's claim statement and its migrations.
"""

from __future__ import annotations

import abc
import builtins
import contextlib
import dataclasses
import json
import logging
import threading
import uuid
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Generic, TypeVar

import orjson

from videosynth.errors import ErrorKind, IdempotencyConflict, QueueFull, StoreError
from videosynth.tasks.models import (
    INHERIT_ALL,
    ApiKey,
    CancelOutcome,
    Delivery,
    DeliveryAttempt,
    DeliveryState,
    EventKind,
    GenerationParams,
    Lease,
    Limits,
    MaintenanceReport,
    NewTask,
    QueueCap,
    Stage,
    StoredInput,
    Task,
    TaskEvent,
    TaskFilter,
    TaskStatus,
    Webhook,
    WebhookSecrets,
)

TASK_COLUMNS = (
    "task_id, account_id, api_key_id, request_id, model, engine, prompt, params, status, submit_time_ms,"
    " scheduled_time_ms, end_time_ms, error_kind, error_detail, result_key, video_duration_ms, worker_id,"
    " attempts, cancel_requested, legacy_error_code, legacy_error_message, progress, stage, engine_state,"
    " upstream_code, callback_url"
)
#: How long an Idempotency-Key names its first request's task.
IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000
#: What a client over its queue cap is told to wait: a queued task starts in seconds to minutes.
QUEUE_FULL_RETRY_S = 5
# Bounds the statement's parameter list; SQLite's default limit is far above it.
GET_MANY_CHUNK = 500
log = logging.getLogger(__name__)
C = TypeVar("C")


class _Held(Generic[C]):
    """A thread's connection; closed when the thread ends and its thread-local storage goes."""

    def __init__(self, conn: C, close: Callable[[C], None]) -> None:
        self.conn = conn
        self._close: Callable[[C], None] | None = close

    def close(self) -> None:
        close, self._close = self._close, None
        if close is not None:
            with contextlib.suppress(Exception):
                close(self.conn)

    def __del__(self) -> None:
        self.close()


class ThreadConnections(Generic[C]):
    """One connection per thread, opened on first use and closed when that thread ends.

    Pool threads come and go (anyio retires idle ones after 10 s); a connection kept for a dead thread is
    a leaked file or PostgreSQL connection, hence the close at thread end rather than only at ``close_all``.
    """

    def __init__(self, connect: Callable[[], C], close: Callable[[C], None]) -> None:
        self._connect = connect
        self._close = close
        self._local = threading.local()
        self._live: weakref.WeakSet[_Held[C]] = weakref.WeakSet()
        self._lock = threading.Lock()

    def get(self, usable: Callable[[C], bool] = lambda conn: True) -> C:
        held: _Held[C] | None = getattr(self._local, "held", None)
        if held is None or not usable(held.conn):
            if held is not None:
                held.close()
            held = _Held(self._connect(), self._close)
            self._local.held = held
            with self._lock:
                self._live.add(held)
        return held.conn

    def drop(self) -> None:
        """Forget (and close) this thread's connection, e.g. after the server went away."""
        held: _Held[C] | None = getattr(self._local, "held", None)
        self._local.held = None
        if held is not None:
            held.close()

    def open_count(self) -> int:
        with self._lock:
            return sum(1 for held in self._live if held._close is not None)

    def close_all(self) -> None:
        with self._lock:
            live = list(self._live)
        for held in live:
            held.close()
        self._local = threading.local()


def store_unavailable(exc: Exception) -> StoreError:
    """The error for a driver failure: the driver's text (host, file, SQL) goes to the log only."""
    log.warning("task store unavailable: %s", exc)
    return StoreError()


WORKER_LOST_DETAIL = "The task was interrupted too many times (its worker was lost)."


NEW_TASK_COLUMNS = (
    "task_id",
    "account_id",
    "api_key_id",
    "request_id",
    "model",
    "engine",
    "prompt",
    "params",
    "status",
    "submit_time_ms",
    "callback_url",
)


def new_task_rows(tasks: Sequence[NewTask]) -> tuple[list[tuple[Any, ...]], list[tuple[str, int, str]]]:
    """The ``tasks`` rows (in ``NEW_TASK_COLUMNS`` order) and ``task_media`` rows of new tasks."""
    task_rows = [
        (
            task.task_id,
            task.account_id,
            task.api_key_id,
            task.request_id,
            task.model,
            task.engine,
            task.prompt,
            json.dumps(task.params.to_dict()),
            TaskStatus.PENDING.value,
            task.submit_time_ms,
            task.callback_url,
        )
        for task in tasks
    ]
    media_rows = [(task.task_id, i, url) for task in tasks for i, url in enumerate(task.media_urls)]
    return task_rows, media_rows


def row_to_task(row: Mapping[str, Any], media: tuple[str, ...] = ()) -> Task:
    return Task(
        task_id=row["task_id"],
        account_id=row["account_id"],
        api_key_id=row["api_key_id"],
        request_id=row["request_id"],
        model=row["model"],
        engine=row["engine"],
        prompt=row["prompt"],
        media_urls=media,
        params=GenerationParams.from_dict(orjson.loads(row["params"])),
        status=TaskStatus(row["status"]),
        submit_time_ms=row["submit_time_ms"],
        scheduled_time_ms=row["scheduled_time_ms"],
        end_time_ms=row["end_time_ms"],
        error_kind=ErrorKind(row["error_kind"]) if row["error_kind"] else None,
        error_detail=row["error_detail"],
        result_key=row["result_key"],
        video_duration_ms=row["video_duration_ms"],
        worker_id=row["worker_id"],
        attempts=row["attempts"],
        cancel_requested=bool(row["cancel_requested"]),
        progress=row["progress"],
        stage=_stage(row["stage"]),
        legacy_error=(
            (row["legacy_error_code"], row["legacy_error_message"] or "")
            if row["legacy_error_code"]
            else None
        ),
        engine_state=row["engine_state"],
        upstream_code=row["upstream_code"],
        callback_url=row["callback_url"],
    )


def count_new_pending(tasks: Sequence[NewTask]) -> list[tuple[str, int]]:
    """``(scope, new PENDING tasks)`` of a batch for ``pending_counts`` (schema 7: inserts are counted by
    the inserting transaction; status changes and deletes by triggers). In scope order, so concurrent
    batches lock the counter rows in the same order."""
    counts: dict[str, int] = {}
    for task in tasks:
        for scope in ("a:" + task.account_id, "k:" + task.api_key_id):
            counts[scope] = counts.get(scope, 0) + 1
    return sorted(counts.items())


def _stage(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return Stage(text)
    except ValueError:  # an engine's own stage
        return text


# A key row joined with its account's limits (``a_``-prefixed).
KEY_SELECT = (
    "SELECT k.*, a.submit_rps AS a_submit_rps, a.query_rps AS a_query_rps, a.max_queued AS a_max_queued,"
    " a.max_stored_mb AS a_max_stored_mb FROM api_keys k JOIN accounts a ON a.account_id = k.account_id"
)


def row_to_key(row: Mapping[str, Any]) -> ApiKey:
    return ApiKey(
        key_id=row["key_id"],
        account_id=row["account_id"],
        name=row["name"],
        prefix=row["prefix"],
        created_ms=row["created_ms"],
        revoked_ms=row["revoked_ms"],
        limits=Limits(**{f: row[f] for f in Limits.FIELDS}),
        account_limits=Limits(**{f: row["a_" + f] for f in Limits.FIELDS}),
    )


def as_of_event(task: Task, kind: EventKind) -> Task:
    """``task`` as ``kind`` left it. A finished task's row changes no more, so it is what its event left; a
    running event's task is the row as a claim leaves it (no result, no failure, no progress yet), whatever
    the task did since. (Events record no copy of their task: one row fewer to write at every change.)"""
    if kind is not EventKind.RUNNING:
        return task
    return dataclasses.replace(
        task,
        status=TaskStatus.RUNNING,
        end_time_ms=None,
        error_kind=None,
        error_detail=None,
        result_key=None,
        video_duration_ms=None,
        progress=None,
        stage=None,
        legacy_error=None,
        upstream_code=None,
    )


#: An event joined with its task (``t``): the event's own columns are ``e_``-prefixed.
EVENT_COLUMNS = "e.seq AS e_seq, e.kind AS e_kind, e.created_ms AS e_created_ms, " + ", ".join(
    "t." + c.strip() for c in TASK_COLUMNS.split(",")
)
EVENT_JOIN = "task_events e JOIN tasks t ON t.task_id = e.task_id"


def row_to_event(row: Mapping[str, Any]) -> TaskEvent:
    kind = EventKind(row["e_kind"])
    task = row_to_task(row)
    return TaskEvent(
        seq=int(row["e_seq"]),
        account_id=task.account_id,
        task_id=task.task_id,
        kind=kind,
        created_ms=int(row["e_created_ms"]),
        task=as_of_event(task, kind),
    )


def row_to_webhook(row: Mapping[str, Any]) -> Webhook:
    return Webhook(
        webhook_id=row["webhook_id"],
        account_id=row["account_id"],
        url=row["url"],
        events=tuple(EventKind(k) for k in str(row["events"]).split(",") if k),
        format=row["format"],
        include_result=bool(row["include_result"]),
        created_ms=row["created_ms"],
    )


def placeholders(n: int) -> str:
    return ",".join("?" * n)


class SqlTaskStore(abc.ABC):
    """Every status change is a conditional UPDATE; a lost race changes no row and returns False."""

    # --- supplied by the dialect ------------------------------------------------------------------
    @abc.abstractmethod
    def _db(self) -> contextlib.AbstractContextManager[Any]:
        """A connection in autocommit mode, with driver errors mapped to StoreError."""

    @abc.abstractmethod
    def _transaction(self) -> contextlib.AbstractContextManager[Any]:
        """A connection inside a write transaction, committed on exit."""

    @abc.abstractmethod
    def _execute(self, conn: Any, sql: str, args: Collection[Any] = ()) -> Any:
        """Run ``sql`` (``?`` placeholders); returns a cursor with rowcount/fetchone/fetchall of mappings."""

    def _execute_many(self, conn: Any, sql: str, rows: Sequence[Collection[Any]]) -> None:
        """Run ``sql`` once per row of ``rows`` (``?`` placeholders); nothing when ``rows`` is empty."""
        for row in rows:
            self._execute(conn, sql, row)

    #: appended to the claim's candidate query (PostgreSQL: FOR UPDATE SKIP LOCKED)
    _candidate_lock = ""

    def _account_has_room(self, conn: Any, account_id: str, limit: int) -> bool:
        """Re-check the fair-share limit where concurrent claims can interleave (PostgreSQL)."""
        return True

    @abc.abstractmethod
    def _try_maintenance_lock(self, conn: Any) -> bool:
        """Inside a transaction: True if this process may run maintenance now (one process at a time)."""

    # --- tasks -------------------------------------------------------------------------------------
    def create(self, task: NewTask) -> None:
        self.create_many([task])

    def create_many(self, tasks: Sequence[NewTask], caps: Mapping[str, QueueCap] | None = None) -> None:
        if not tasks:
            return
        with self._transaction() as conn:
            self._check_caps(conn, tasks, caps)
            self._insert_tasks(conn, tasks)
            self._after_create(conn)

    def _insert_tasks(self, conn: Any, tasks: Sequence[NewTask]) -> None:
        task_rows, media_rows = new_task_rows(tasks)
        self._execute_many(
            conn,
            f"INSERT INTO tasks ({', '.join(NEW_TASK_COLUMNS)}) VALUES ({','.join('?' * len(NEW_TASK_COLUMNS))})",
            task_rows,
        )
        self._execute_many(conn, "INSERT INTO task_media (task_id, position, url) VALUES (?,?,?)", media_rows)
        self._execute_many(
            conn,
            "INSERT INTO pending_counts (scope, n) VALUES (?,?)"
            " ON CONFLICT (scope) DO UPDATE SET n = pending_counts.n + excluded.n",
            count_new_pending(tasks),
        )

    def _lock_queue(self, conn: Any, scope: str) -> None:
        """Serialize queue-cap checks of one scope where transactions interleave (PostgreSQL; SQLite's
        BEGIN IMMEDIATE already admits one writer at a time)."""
        return None

    def _check_caps(self, conn: Any, tasks: Sequence[NewTask], caps: Mapping[str, QueueCap] | None) -> None:
        if not caps:
            return
        adding: dict[tuple[str, str], list[int]] = {}  # (column, id) -> [limit, new tasks]
        for task in tasks:
            cap = caps.get(task.task_id)
            if cap is None or cap.limit <= 0:
                continue
            scope = ("api_key_id", task.api_key_id) if cap.per_key else ("account_id", task.account_id)
            entry = adding.setdefault(scope, [cap.limit, 0])
            entry[0] = min(entry[0], cap.limit)
            entry[1] += 1
        for (column, ident), (limit, count) in sorted(adding.items()):  # sorted: no lock-order deadlocks
            self._lock_queue(conn, f"{column}:{ident}")
            # Kept with the tasks (schema 6 and 7): one row, however long the backlog.
            counter = ("k:" if column == "api_key_id" else "a:") + ident
            row = self._execute(conn, "SELECT n FROM pending_counts WHERE scope=?", (counter,)).fetchone()
            waiting = int(row["n"]) if row else 0
            if waiting + count > limit:
                owner = "key" if column == "api_key_id" else "account"
                raise QueueFull(
                    f"Allocated quota exceeded: this {owner} already has {waiting} tasks waiting and may"
                    f" have {limit}; try again when some have started.",
                    retry_after_s=QUEUE_FULL_RETRY_S,
                )

    def create_idempotent(
        self, task: NewTask, key: str, fingerprint: str, now_ms: int, cap: QueueCap | None = None
    ) -> tuple[str, bool]:
        with self._transaction() as conn:
            # A key past its lifetime is free again (housekeeping also deletes them, in bulk).
            self._execute(
                conn,
                "DELETE FROM idempotency_keys WHERE account_id=? AND idem_key=? AND created_ms < ?",
                (task.account_id, key, now_ms - IDEMPOTENCY_TTL_MS),
            )
            # Concurrent submits with one key: the second INSERT waits for the first transaction and then
            # inserts nothing (a primary key), so exactly one of them creates a task.
            claimed = self._execute(
                conn,
                "INSERT INTO idempotency_keys (account_id, idem_key, fingerprint, task_id, created_ms)"
                " VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING",
                (task.account_id, key, fingerprint, task.task_id, now_ms),
            ).rowcount
            if claimed:
                self._check_caps(conn, [task], {task.task_id: cap} if cap else None)
                self._insert_tasks(conn, [task])
                self._after_create(conn)
                return task.task_id, True
            row = self._execute(
                conn,
                "SELECT fingerprint, task_id FROM idempotency_keys WHERE account_id=? AND idem_key=?",
                (task.account_id, key),
            ).fetchone()
        if row is None:  # deleted by housekeeping in between: rare enough to ask the client to retry
            raise StoreError("the idempotency key changed meanwhile; retry")
        if row["fingerprint"] != fingerprint:
            raise IdempotencyConflict()
        return str(row["task_id"]), False

    def find_idempotent(
        self, account_id: str, key: str, now_ms: int, max_age_ms: int = IDEMPOTENCY_TTL_MS
    ) -> tuple[str, str] | None:
        with self._db() as conn:
            row = self._execute(
                conn,
                "SELECT fingerprint, task_id FROM idempotency_keys"
                " WHERE account_id=? AND idem_key=? AND created_ms >= ?",
                (account_id, key, now_ms - max_age_ms),
            ).fetchone()
        return (str(row["fingerprint"]), str(row["task_id"])) if row else None

    def remember_idempotent(
        self, account_id: str, key: str, fingerprint: str, task_id: str, now_ms: int
    ) -> None:
        with self._db() as conn:
            self._execute(
                conn,
                "INSERT INTO idempotency_keys (account_id, idem_key, fingerprint, task_id, created_ms)"
                " VALUES (?,?,?,?,?) ON CONFLICT (account_id, idem_key) DO UPDATE SET"
                " fingerprint=excluded.fingerprint, task_id=excluded.task_id, created_ms=excluded.created_ms",
                (account_id, key, fingerprint, task_id, now_ms),
            )

    def forget_idempotent(self, account_id: str, key: str) -> None:
        with self._db() as conn:
            self._execute(
                conn, "DELETE FROM idempotency_keys WHERE account_id=? AND idem_key=?", (account_id, key)
            )

    def record_stored(self, inputs: Sequence[StoredInput]) -> None:
        if not inputs:
            return
        with self._transaction() as conn:
            self._execute_many(
                conn,
                "INSERT INTO stored_inputs (object_key, account_id, api_key_id, task_id, bytes, expires_ms)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT (object_key) DO UPDATE SET bytes=excluded.bytes,"
                " expires_ms=excluded.expires_ms",
                [(i.object_key, i.account_id, i.api_key_id, i.task_id, i.size, i.expires_ms) for i in inputs],
            )

    def stored_bytes(self, account_id: str, now_ms: int) -> int:
        with self._db() as conn:
            row = self._execute(
                conn,
                "SELECT COALESCE(SUM(s.bytes), 0) AS n FROM stored_inputs s LEFT JOIN tasks t ON t.task_id = s.task_id"
                " WHERE s.account_id=? AND s.expires_ms > ?"
                " AND (s.task_id IS NULL OR t.status IN ('PENDING', 'RUNNING'))",
                (account_id, now_ms),
            ).fetchone()
        return int(row["n"])

    def take_rate(self, scope: str, window_s: int, want: int, limit: int) -> int:
        with self._db() as conn:
            # One statement: atomic on both databases, whichever replica runs it. A newer window starts the
            # count again; a replica whose clock lags adds to the newer window rather than resetting it.
            row = self._execute(
                conn,
                "INSERT INTO rate_windows (scope, window_s, used) VALUES (?,?,?) ON CONFLICT (scope) DO UPDATE SET"
                " used = CASE WHEN rate_windows.window_s >= excluded.window_s THEN rate_windows.used + excluded.used"
                " ELSE excluded.used END,"
                " window_s = CASE WHEN rate_windows.window_s >= excluded.window_s THEN rate_windows.window_s"
                " ELSE excluded.window_s END"
                " RETURNING used",
                (scope, window_s, want),
            ).fetchone()
        used = int(row["used"])
        return max(0, min(want, limit - (used - want)))

    @abc.abstractmethod
    def _after_create(self, conn: Any) -> None:
        """Hook for wake-ups: work became claimable (``NOTIFY`` on PostgreSQL, the doorbell on SQLite).

        Called inside the transaction that made it claimable, or after an autocommit statement did."""

    def _media(self, conn: Any, task_id: str) -> tuple[str, ...]:
        rows = self._execute(conn, "SELECT url FROM task_media WHERE task_id=? ORDER BY position", (task_id,))
        return tuple(r["url"] for r in rows.fetchall())

    def get(self, task_id: str) -> Task | None:
        with self._db() as conn:
            row = self._execute(
                conn, f"SELECT {TASK_COLUMNS} FROM tasks WHERE task_id=?", (task_id,)
            ).fetchone()
            return row_to_task(row) if row else None

    def get_many(self, task_ids: Collection[str]) -> dict[str, Task]:
        found: dict[str, Task] = {}
        wanted = list(dict.fromkeys(task_ids))
        with self._db() as conn:
            for start in range(0, len(wanted), GET_MANY_CHUNK):
                chunk = wanted[start : start + GET_MANY_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._execute(
                    conn, f"SELECT {TASK_COLUMNS} FROM tasks WHERE task_id IN ({marks})", chunk
                ).fetchall()
                found.update((r["task_id"], row_to_task(r)) for r in rows)
        return found

    def task_counts(self) -> builtins.list[tuple[str, str, str, int, int | None]]:
        with self._db() as conn:
            rows = self._execute(
                conn,
                "SELECT status, model, engine, COUNT(*) AS tasks, MIN(submit_time_ms) AS oldest FROM tasks"
                " GROUP BY status, model, engine",
            ).fetchall()
        return [
            (str(r["status"]), str(r["model"]), str(r["engine"]), int(r["tasks"]), r["oldest"]) for r in rows
        ]

    def ping(self) -> None:
        with self._db() as conn:
            self._execute(conn, "SELECT 1").fetchone()

    def tasks_ahead(self, task: Task) -> int | None:
        with self._db() as conn:
            # One pass over the engine's PENDING tasks (an index range), grouped by account, with the
            # same running count and "served" time that claim() orders the accounts by.
            rows = self._execute(
                conn,
                "SELECT p.account_id, count(*) AS pending,"
                " sum(CASE WHEN p.submit_time_ms < ? OR (p.submit_time_ms = ? AND p.task_id < ?)"
                " THEN 1 ELSE 0 END) AS older,"
                " max(CASE WHEN p.task_id = ? THEN 1 ELSE 0 END) AS mine,"
                " (SELECT count(*) FROM tasks r WHERE r.account_id = p.account_id AND r.status = 'RUNNING')"
                " AS running,"
                " COALESCE((SELECT max(s.scheduled_time_ms) FROM tasks s WHERE s.account_id = p.account_id),"
                " -1) AS served"
                " FROM tasks p WHERE p.status = 'PENDING' AND p.engine = ? GROUP BY p.account_id",
                (task.submit_time_ms, task.submit_time_ms, task.task_id, task.task_id, task.engine),
            ).fetchall()
        turns = sorted(rows, key=lambda r: (r["running"], r["served"], r["account_id"]))
        mine = next(
            (i for i, r in enumerate(turns) if r["account_id"] == task.account_id and r["mine"]), None
        )
        if mine is None:
            return None
        own_older = int(turns[mine]["older"])
        # The task goes in round ``own_older``; every account before its own in the turn order has one
        # more task started by the end of that round than the accounts after it.
        return own_older + sum(
            min(int(r["pending"]), own_older + (1 if i < mine else 0))
            for i, r in enumerate(turns)
            if i != mine
        )

    def list(self, account_id: str, flt: TaskFilter, offset: int, limit: int) -> tuple[int, list[Task]]:
        where = ["account_id = ?"]
        args: list[Any] = [account_id]
        for column, op, value in (
            ("status", "=", flt.status.value if flt.status is not None else None),
            ("model", "=", flt.model),
            ("task_id", "=", flt.task_id),
            ("api_key_id", "=", flt.api_key_id),
            ("submit_time_ms", ">=", flt.start_ms),
            ("submit_time_ms", "<=", flt.end_ms),
        ):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        clause = " AND ".join(where)
        with self._db() as conn:
            total = self._execute(conn, f"SELECT count(*) AS n FROM tasks WHERE {clause}", args).fetchone()[
                "n"
            ]
            rows = self._execute(
                conn,
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE {clause}"
                " ORDER BY submit_time_ms DESC, task_id LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
        return int(total), [row_to_task(r) for r in rows]

    def page(
        self, account_id: str, after: Task | None, limit: int, *, newest_first: bool = True
    ) -> builtins.list[Task]:
        # Keyset paging on (submit_time_ms, task_id): an index range of tasks_account_submit, and a cursor
        # that no insert moves.
        direction, past = ("DESC", "<") if newest_first else ("ASC", ">")
        where = "account_id = ?"
        args: list[Any] = [account_id]
        if after is not None:
            where += f" AND (submit_time_ms {past} ? OR (submit_time_ms = ? AND task_id {past} ?))"
            args += [after.submit_time_ms, after.submit_time_ms, after.task_id]
        with self._db() as conn:
            rows = self._execute(
                conn,
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE {where}"
                f" ORDER BY submit_time_ms {direction}, task_id {direction} LIMIT ?",
                [*args, limit],
            ).fetchall()
        return [row_to_task(r) for r in rows]

    def delete_task(self, task_id: str, account_id: str) -> Task | None:
        with self._transaction() as conn:
            media = self._media(conn, task_id)
            row = self._execute(
                conn,
                f"DELETE FROM tasks WHERE task_id=? AND account_id=? RETURNING {TASK_COLUMNS}",
                (task_id, account_id),
            ).fetchone()
            if row is None:
                return None
            self._execute(conn, "DELETE FROM task_media WHERE task_id=?", (task_id,))
            self._execute(conn, "DELETE FROM stored_inputs WHERE task_id=?", (task_id,))
            # A deleted task leaves nothing behind: not its history, nor deliveries still to make.
            self._delete_events(conn, "task_id=?", (task_id,))
            return row_to_task(row, media)

    def cancel_pending(self, task_id: str, account_id: str, now_ms: int) -> bool:
        with self._db() as conn:
            cur = self._execute(
                conn,
                "UPDATE tasks SET status='CANCELED', end_time_ms=?"
                " WHERE task_id=? AND account_id=? AND status='PENDING'",
                (now_ms, task_id, account_id),
            )
            return bool(cur.rowcount == 1)

    def request_cancel(self, task_id: str, account_id: str, now_ms: int) -> CancelOutcome:
        if self.cancel_pending(task_id, account_id, now_ms):
            return CancelOutcome.CANCELED
        with self._db() as conn:
            cur = self._execute(
                conn,
                "UPDATE tasks SET cancel_requested=1 WHERE task_id=? AND account_id=? AND status='RUNNING'",
                (task_id, account_id),
            )
            if cur.rowcount == 1:
                return CancelOutcome.REQUESTED
        # A task claimed between the two statements is RUNNING by the second one, so no window is lost.
        return CancelOutcome.REFUSED

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
        where = ""
        args: list[Any] = []
        for column, values in (("model", models), ("engine", engines)):
            if values is not None:
                if not values:
                    return None
                where += f" AND t.{column} IN ({placeholders(len(values))})"
                args.extend(values)
        with self._transaction() as conn:
            # Fair across accounts: the next task is the oldest PENDING one of the account with the fewest
            # RUNNING tasks and, among those, the one served longest ago. One account's backlog therefore
            # never holds up another account's next task, and equal accounts take turns.
            accounts = self._execute(
                conn,
                "WITH RECURSIVE pending_accounts(account_id) AS ("
                f" SELECT (SELECT min(t.account_id) FROM tasks t WHERE t.status = 'PENDING'{where})"
                " UNION ALL"
                " SELECT (SELECT min(t.account_id) FROM tasks t"
                f" WHERE t.status = 'PENDING' AND t.account_id > p.account_id{where})"
                " FROM pending_accounts p WHERE p.account_id IS NOT NULL)"
                " SELECT p.account_id,"
                " (SELECT count(*) FROM tasks r WHERE r.account_id = p.account_id AND r.status = 'RUNNING')"
                " AS running,"
                " COALESCE((SELECT max(s.scheduled_time_ms) FROM tasks s WHERE s.account_id = p.account_id),"
                " -1) AS served"
                " FROM pending_accounts p WHERE p.account_id IS NOT NULL"
                " ORDER BY running, served, p.account_id",
                [*args, *args],
            ).fetchall()
            for account in accounts:
                if max_running_per_account is not None and account["running"] >= max_running_per_account:
                    continue
                candidate = self._execute(
                    conn,
                    f"SELECT t.task_id FROM tasks t WHERE t.status = 'PENDING' AND t.account_id = ?{where}"
                    f" ORDER BY t.submit_time_ms, t.task_id LIMIT 1{self._candidate_lock}",
                    [account["account_id"], *args],
                ).fetchone()
                if candidate is None:
                    continue  # every one of them is being claimed by someone else right now
                if max_running_per_account is not None and not self._account_has_room(
                    conn, account["account_id"], max_running_per_account
                ):
                    continue
                # The status check makes a lost race a no-op even where the candidate was not locked.
                row = self._execute(
                    conn,
                    "UPDATE tasks SET status='RUNNING', worker_id=?, lease_expires_ms=?,"
                    " scheduled_time_ms=COALESCE(scheduled_time_ms, ?), attempts=attempts+1"
                    f" WHERE task_id=? AND status='PENDING' RETURNING {TASK_COLUMNS}",
                    (worker_id, now_ms + lease_ms, now_ms, candidate["task_id"]),
                ).fetchone()
                if row is None:
                    return None
                return row_to_task(row, self._media(conn, row["task_id"]))
            return None

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
        with self._db() as conn:
            row = self._execute(
                conn,
                "UPDATE tasks SET lease_expires_ms=?,"
                " progress=CASE WHEN progress IS NULL OR progress < CAST(? AS INTEGER) THEN CAST(? AS INTEGER)"
                " ELSE progress END,"
                " stage=COALESCE(CAST(? AS TEXT), stage)"
                " WHERE task_id=? AND worker_id=? AND status='RUNNING'"
                " RETURNING cancel_requested",
                (
                    now_ms + lease_ms,
                    progress,
                    progress,
                    str(stage) if stage is not None else None,
                    task_id,
                    worker_id,
                ),
            ).fetchone()
            if row is None:
                return Lease.LOST
            return Lease.CANCEL_REQUESTED if row["cancel_requested"] else Lease.HELD

    def succeed(
        self, task_id: str, worker_id: str, now_ms: int, result_key: str, video_duration_ms: int
    ) -> bool:
        with self._db() as conn:
            cur = self._execute(
                conn,
                "UPDATE tasks SET status='SUCCEEDED', end_time_ms=?, result_key=?, video_duration_ms=?,"
                " lease_expires_ms=NULL WHERE task_id=? AND worker_id=? AND status='RUNNING'",
                (now_ms, result_key, video_duration_ms, task_id, worker_id),
            )
            return bool(cur.rowcount == 1)

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
        with self._db() as conn:
            cur = self._execute(
                conn,
                "UPDATE tasks SET status='FAILED', end_time_ms=?, error_kind=?, error_detail=?, upstream_code=?,"
                " lease_expires_ms=NULL WHERE task_id=? AND worker_id=? AND status='RUNNING'",
                (now_ms, kind.value, detail, upstream_code, task_id, worker_id),
            )
            return bool(cur.rowcount == 1)

    def save_engine_state(self, task_id: str, worker_id: str, state: str) -> bool:
        with self._db() as conn:
            cur = self._execute(
                conn,
                "UPDATE tasks SET engine_state=? WHERE task_id=? AND worker_id=? AND status='RUNNING'",
                (state, task_id, worker_id),
            )
            return bool(cur.rowcount == 1)

    def finish_canceled(self, task_id: str, worker_id: str, now_ms: int) -> bool:
        with self._db() as conn:
            cur = self._execute(
                conn,
                "UPDATE tasks SET status='CANCELED', end_time_ms=?, lease_expires_ms=NULL"
                " WHERE task_id=? AND worker_id=? AND status='RUNNING'",
                (now_ms, task_id, worker_id),
            )
            return bool(cur.rowcount == 1)

    def release(self, task_id: str, worker_id: str) -> bool:
        with self._db() as conn:
            # Handing a task back on shutdown is not a failed attempt.
            cur = self._execute(
                conn,
                "UPDATE tasks SET status='PENDING', worker_id=NULL, lease_expires_ms=NULL, attempts=attempts-1"
                " WHERE task_id=? AND worker_id=? AND status='RUNNING' AND cancel_requested=0",
                (task_id, worker_id),
            )
            released = bool(cur.rowcount == 1)
            if released:
                self._after_create(conn)
            return released

    def _requeue_expired(self, conn: Any, now_ms: int, max_attempts: int) -> tuple[int, int]:
        # Rows another transaction holds are skipped (PostgreSQL), left for the next round: this statement
        # takes the event lock of each account it changes, and waiting for a row meanwhile could deadlock
        # with a claim or finish of that account.
        failed = self._execute(
            conn,
            "UPDATE tasks SET status='FAILED', end_time_ms=?, error_kind=?, error_detail=?,"
            " lease_expires_ms=NULL"
            " WHERE task_id IN (SELECT t.task_id FROM tasks t"
            f" WHERE t.status='RUNNING' AND t.lease_expires_ms < ? AND t.attempts >= ?{self._candidate_lock})",
            (now_ms, ErrorKind.WORKER_LOST.value, WORKER_LOST_DETAIL, now_ms, max_attempts),
        ).rowcount
        requeued = self._execute(
            conn,
            "UPDATE tasks SET status='PENDING', worker_id=NULL, lease_expires_ms=NULL"
            " WHERE task_id IN (SELECT t.task_id FROM tasks t"
            f" WHERE t.status='RUNNING' AND t.lease_expires_ms < ?{self._candidate_lock})",
            (now_ms,),
        ).rowcount
        if requeued:
            self._after_create(conn)
        return int(requeued), int(failed)

    def requeue_expired(self, now_ms: int, max_attempts: int) -> tuple[int, int]:
        with self._transaction() as conn:
            return self._requeue_expired(conn, now_ms, max_attempts)

    def maintain(
        self, now_ms: int, *, max_attempts: int, timeout_ms: int, retention_ms: int
    ) -> MaintenanceReport | None:
        with self._transaction() as conn:
            if not self._try_maintenance_lock(conn):
                return None
            requeued, failed_lost = self._requeue_expired(conn, now_ms, max_attempts)
            timed_out = self._execute(
                conn,
                "UPDATE tasks SET status='FAILED', end_time_ms=?, error_kind=?, error_detail=NULL,"
                " lease_expires_ms=NULL WHERE task_id IN (SELECT t.task_id FROM tasks t"
                f" WHERE t.status IN ('PENDING', 'RUNNING') AND t.submit_time_ms < ?{self._candidate_lock})",
                (now_ms, ErrorKind.TIMEOUT.value, now_ms - timeout_ms),
            ).rowcount
            cutoff = now_ms - retention_ms
            keys = [
                r["result_key"]
                for r in self._execute(
                    conn,
                    "SELECT result_key FROM tasks WHERE submit_time_ms < ? AND result_key IS NOT NULL",
                    (cutoff,),
                ).fetchall()
            ]
            self._execute(
                conn,
                "DELETE FROM task_media WHERE task_id IN (SELECT task_id FROM tasks WHERE submit_time_ms < ?)",
                (cutoff,),
            )
            self._delete_events(
                conn, "task_id IN (SELECT task_id FROM tasks WHERE submit_time_ms < ?)", (cutoff,)
            )
            self._execute(conn, "DELETE FROM tasks WHERE submit_time_ms < ?", (cutoff,))
            # Events of tasks deleted meanwhile (their rows went with them) and anything older than the
            # retention, whatever its task.
            self._delete_events(conn, "created_ms < ?", (cutoff,))
            self._execute(
                conn, "DELETE FROM idempotency_keys WHERE created_ms < ?", (now_ms - IDEMPOTENCY_TTL_MS,)
            )
            self._execute(conn, "DELETE FROM stored_inputs WHERE expires_ms < ?", (now_ms,))
            # A scope idle for a minute: its row is recreated by its next request.
            self._execute(conn, "DELETE FROM rate_windows WHERE window_s < ?", (now_ms // 1000 - 60,))
        return MaintenanceReport(
            requeued=requeued,
            failed_lost=failed_lost,
            timed_out=int(timed_out),
            purged_result_keys=tuple(keys),
        )

    # --- events and webhooks ------------------------------------------------------------------------
    #: appended to the delivery claim's candidate query (PostgreSQL: FOR UPDATE OF d SKIP LOCKED)
    _delivery_lock = ""

    def _delete_events(self, conn: Any, where: str, args: Collection[Any]) -> None:
        """Events, their deliveries and the deliveries' attempts matching ``where`` (a condition on
        ``task_id`` or ``created_ms``, columns of both tables)."""
        self._execute(
            conn,
            f"DELETE FROM delivery_attempts WHERE delivery_id IN (SELECT delivery_id FROM deliveries WHERE {where})",
            args,
        )
        self._execute(conn, f"DELETE FROM deliveries WHERE {where}", args)
        self._execute(conn, f"DELETE FROM task_events WHERE {where}", args)

    def events_after(self, account_id: str, after_seq: int, limit: int) -> builtins.list[TaskEvent]:
        with self._db() as conn:
            rows = self._execute(
                conn,
                f"SELECT {EVENT_COLUMNS} FROM {EVENT_JOIN} WHERE e.account_id=? AND e.seq > ? ORDER BY e.seq LIMIT ?",
                (account_id, after_seq, limit),
            ).fetchall()
        return [row_to_event(r) for r in rows]

    def last_event_seq(self, account_id: str) -> int:
        with self._db() as conn:
            row = self._execute(
                conn, "SELECT COALESCE(max(seq), 0) AS seq FROM task_events WHERE account_id=?", (account_id,)
            ).fetchone()
        return int(row["seq"])

    def add_webhook(self, hook: Webhook) -> None:
        with self._db() as conn:
            self._execute(
                conn,
                "INSERT INTO webhooks (webhook_id, account_id, url, events, format, include_result, created_ms)"
                " VALUES (?,?,?,?,?,?,?)",
                (
                    hook.webhook_id,
                    hook.account_id,
                    hook.url,
                    "," + ",".join(hook.events) + ",",
                    hook.format,
                    int(hook.include_result),
                    hook.created_ms,
                ),
            )

    def list_webhooks(self, account_id: str) -> builtins.list[Webhook]:
        with self._db() as conn:
            rows = self._execute(
                conn,
                "SELECT * FROM webhooks WHERE account_id=? ORDER BY created_ms, webhook_id",
                (account_id,),
            ).fetchall()
        return [row_to_webhook(r) for r in rows]

    def remove_webhook(self, account_id: str, webhook_id: str) -> bool:
        with self._transaction() as conn:
            cur = self._execute(
                conn, "DELETE FROM webhooks WHERE webhook_id=? AND account_id=?", (webhook_id, account_id)
            )
            if cur.rowcount != 1:
                return False
            self._execute(
                conn,
                "UPDATE deliveries SET state='dropped', next_attempt_ms=NULL WHERE target=? AND state='pending'",
                (webhook_id,),
            )
            return True

    def webhook_secrets(self, account_id: str, factory: Callable[[], str]) -> WebhookSecrets:
        with self._transaction() as conn:
            self._execute(
                conn,
                "INSERT INTO webhook_secrets (account_id, secret) VALUES (?,?) ON CONFLICT (account_id) DO NOTHING",
                (account_id, factory()),
            )
            return self._secrets(conn, account_id)

    def rotate_webhook_secret(
        self, account_id: str, new_secret: str, now_ms: int, overlap_ms: int
    ) -> WebhookSecrets:
        with self._transaction() as conn:
            cur = self._execute(
                conn,
                "UPDATE webhook_secrets SET previous_secret=secret, previous_until_ms=?, secret=?"
                " WHERE account_id=?",
                (now_ms + overlap_ms, new_secret, account_id),
            )
            if cur.rowcount == 0:  # never had one: nothing to overlap with
                self._execute(
                    conn,
                    "INSERT INTO webhook_secrets (account_id, secret) VALUES (?,?)",
                    (account_id, new_secret),
                )
            return self._secrets(conn, account_id)

    def _secrets(self, conn: Any, account_id: str) -> WebhookSecrets:
        row = self._execute(
            conn,
            "SELECT secret, previous_secret, previous_until_ms FROM webhook_secrets WHERE account_id=?",
            (account_id,),
        ).fetchone()
        return WebhookSecrets(row["secret"], row["previous_secret"], row["previous_until_ms"])

    def claim_deliveries(
        self, worker_id: str, now_ms: int, lease_ms: int, limit: int
    ) -> builtins.list[Delivery]:
        with self._transaction() as conn:
            # Due, not held by a live claim, and the first of its task's deliveries to its target still to
            # make: a task's events reach each endpoint in order.
            ids = [
                r["delivery_id"]
                for r in self._execute(
                    conn,
                    "SELECT d.delivery_id FROM deliveries d"
                    " WHERE d.state='pending' AND d.next_attempt_ms <= ?"
                    " AND (d.lease_until_ms IS NULL OR d.lease_until_ms < ?)"
                    " AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.task_id = d.task_id"
                    " AND e.target = d.target AND e.state = 'pending' AND e.event_seq < d.event_seq)"
                    f" ORDER BY d.next_attempt_ms LIMIT ?{self._delivery_lock}",
                    (now_ms, now_ms, limit),
                ).fetchall()
            ]
            if not ids:
                return []
            self._execute(
                conn,
                f"UPDATE deliveries SET claimed_by=?, lease_until_ms=? WHERE delivery_id IN ({placeholders(len(ids))})",
                (worker_id, now_ms + lease_ms, *ids),
            )
            return self._deliveries(conn, f"d.delivery_id IN ({placeholders(len(ids))})", ids, history=False)

    def record_attempt(
        self,
        delivery_id: str,
        worker_id: str,
        attempt: DeliveryAttempt,
        *,
        delivered: bool,
        next_attempt_ms: int | None,
    ) -> bool:
        if delivered:
            state, next_attempt_ms = DeliveryState.DELIVERED, None
        else:
            state = DeliveryState.PENDING if next_attempt_ms is not None else DeliveryState.FAILED
        with self._transaction() as conn:
            row = self._execute(
                conn,
                "UPDATE deliveries SET attempts=attempts+1, tries=tries+1, state=?, next_attempt_ms=?,"
                " claimed_by=NULL, lease_until_ms=NULL"
                " WHERE delivery_id=? AND claimed_by=? AND state='pending' RETURNING attempts",
                (state.value, next_attempt_ms, delivery_id, worker_id),
            ).fetchone()
            if row is None:
                return False  # redelivered, dropped or re-claimed meanwhile: that claim records its own
            self._execute(
                conn,
                "INSERT INTO delivery_attempts (delivery_id, attempt, started_ms, duration_ms, status_code, error)"
                " VALUES (?,?,?,?,?,?)",
                (
                    delivery_id,
                    row["attempts"],
                    attempt.started_ms,
                    attempt.duration_ms,
                    attempt.status_code,
                    attempt.error,
                ),
            )
            return True

    def task_deliveries(self, task_id: str, account_id: str) -> builtins.list[Delivery]:
        with self._db() as conn:
            return self._deliveries(
                conn, "d.task_id=? AND d.account_id=?", (task_id, account_id), history=True
            )

    def redeliver(self, task_id: str, account_id: str, delivery_id: str, now_ms: int) -> Delivery | None:
        with self._transaction() as conn:
            cur = self._execute(
                conn,
                "UPDATE deliveries SET state='pending', tries=0, next_attempt_ms=?, claimed_by=NULL,"
                " lease_until_ms=NULL WHERE delivery_id=? AND task_id=? AND account_id=? AND state <> 'dropped'",
                (now_ms, delivery_id, task_id, account_id),
            )
            if cur.rowcount != 1:
                return None
            found = self._deliveries(conn, "d.delivery_id=?", (delivery_id,), history=True)
            return found[0] if found else None

    def _deliveries(
        self, conn: Any, where: str, args: Collection[Any], *, history: bool
    ) -> builtins.list[Delivery]:
        rows = self._execute(
            conn,
            # Prefixed: tasks have columns of the same names (attempts).
            "SELECT d.delivery_id AS d_id, d.target AS d_target, d.url AS d_url, d.format AS d_format,"
            " d.include_result AS d_include_result, d.state AS d_state, d.attempts AS d_attempts,"
            " d.tries AS d_tries, d.next_attempt_ms AS d_next_attempt_ms, d.created_ms AS d_created_ms,"
            f" {EVENT_COLUMNS}"
            " FROM deliveries d JOIN task_events e ON e.seq = d.event_seq JOIN tasks t ON t.task_id = e.task_id"
            f" WHERE {where} ORDER BY e.seq, d.target",
            args,
        ).fetchall()
        attempts: dict[str, builtins.list[DeliveryAttempt]] = {}
        if history and rows:
            ids = [r["d_id"] for r in rows]
            for a in self._execute(
                conn,
                "SELECT delivery_id, attempt, started_ms, duration_ms, status_code, error FROM delivery_attempts"
                f" WHERE delivery_id IN ({placeholders(len(ids))}) ORDER BY attempt",
                ids,
            ).fetchall():
                attempts.setdefault(a["delivery_id"], []).append(
                    DeliveryAttempt(
                        a["attempt"], a["started_ms"], a["duration_ms"], a["status_code"], a["error"]
                    )
                )
        return [
            Delivery(
                delivery_id=r["d_id"],
                event=row_to_event(r),
                webhook_id=r["d_target"] or None,
                url=r["d_url"],
                format=r["d_format"],
                include_result=bool(r["d_include_result"]),
                state=DeliveryState(r["d_state"]),
                attempts=r["d_attempts"],
                tries=r["d_tries"],
                next_attempt_ms=r["d_next_attempt_ms"],
                created_ms=r["d_created_ms"],
                history=tuple(attempts.get(r["d_id"], ())),
            )
            for r in rows
        ]

    # --- API keys ----------------------------------------------------------------------------------
    def create_key(
        self, name: str, key_hash: str, prefix: str, now_ms: int, limits: Limits = INHERIT_ALL
    ) -> ApiKey:
        account_id = str(uuid.uuid4())
        key_id = str(uuid.uuid4())
        with self._transaction() as conn:
            self._execute(
                conn,
                "INSERT INTO accounts (account_id, name, created_ms) VALUES (?,?,?)",
                (account_id, name, now_ms),
            )
            self._execute(
                conn,
                "INSERT INTO api_keys (key_id, account_id, name, key_hash, prefix, created_ms,"
                f" {', '.join(Limits.FIELDS)}) VALUES ({placeholders(6 + len(Limits.FIELDS))})",
                (
                    key_id,
                    account_id,
                    name,
                    key_hash,
                    prefix,
                    now_ms,
                    *(getattr(limits, f) for f in Limits.FIELDS),
                ),
            )
        return ApiKey(
            key_id=key_id, account_id=account_id, name=name, prefix=prefix, created_ms=now_ms, limits=limits
        )

    def update_limits(
        self, key_id_or_prefix: str, changes: Mapping[str, int | None], *, on_account: bool = False
    ) -> bool:
        unknown = set(changes) - set(Limits.FIELDS)
        if unknown:
            raise ValueError(f"not a limit: {', '.join(sorted(unknown))}")
        with self._transaction() as conn:
            row = self._execute(
                conn,
                "SELECT key_id, account_id FROM api_keys WHERE key_id=? OR prefix=?",
                (key_id_or_prefix,) * 2,
            ).fetchone()
            if row is None:
                return False
            if changes:
                table, column, ident = (
                    ("accounts", "account_id", row["account_id"])
                    if on_account
                    else ("api_keys", "key_id", row["key_id"])
                )
                self._execute(
                    conn,
                    f"UPDATE {table} SET {', '.join(f'{f}=?' for f in changes)} WHERE {column}=?",
                    (*changes.values(), ident),
                )
        return True

    def find_key(self, key_hash: str) -> ApiKey | None:
        with self._db() as conn:
            row = self._execute(
                conn, f"{KEY_SELECT} WHERE k.key_hash=? AND k.revoked_ms IS NULL", (key_hash,)
            ).fetchone()
            return row_to_key(row) if row else None

    def list_keys(self) -> builtins.list[ApiKey]:  # ``list`` is a method here
        with self._db() as conn:
            rows = self._execute(conn, f"{KEY_SELECT} ORDER BY k.created_ms, k.key_id").fetchall()
            return [row_to_key(r) for r in rows]

    def revoke_key(self, key_id_or_prefix: str, now_ms: int) -> bool:
        with self._db() as conn:
            cur = self._execute(
                conn,
                "UPDATE api_keys SET revoked_ms=? WHERE (key_id=? OR prefix=?) AND revoked_ms IS NULL",
                (now_ms, key_id_or_prefix, key_id_or_prefix),
            )
            return bool(cur.rowcount > 0)

    # --- shared secrets ----------------------------------------------------------------------------
    def get_or_create_secret(self, name: str, factory: Callable[[], str]) -> str:
        with self._transaction() as conn:
            # Insert-if-absent, then read: two processes racing both end up with the first value.
            self._execute(
                conn,
                "INSERT INTO secrets (name, value) VALUES (?,?) ON CONFLICT (name) DO NOTHING",
                (name, factory()),
            )
            row = self._execute(conn, "SELECT value FROM secrets WHERE name=?", (name,)).fetchone()
            return str(row["value"])
