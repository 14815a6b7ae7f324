"""PostgreSQL task store (psycopg 3): many API replicas and workers on many machines share one queue.

Claims use ``FOR UPDATE SKIP LOCKED``; new work is announced with ``NOTIFY`` so idle workers wake at
once (polling remains the fallback); migrations serialize on an advisory lock so replicas may start
together.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from importlib import resources
from typing import Any

import orjson

from videosynth.tasks.models import NewTask, QueueCap
from videosynth.tasks.sqlite import split_statements
from videosynth.tasks.sqlstore import (
    NEW_TASK_COLUMNS,
    SqlTaskStore,
    ThreadConnections,
    count_new_pending,
    new_task_rows,
    store_unavailable,
)

try:
    import psycopg
    from psycopg.rows import dict_row
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "PostgreSQL support needs the postgres extra: pip install 'videosynth[postgres]'"
    ) from exc

MIGRATIONS = (
    "postgres_001.sql",
    "postgres_002.sql",
    "postgres_003.sql",
    "postgres_004.sql",
    "postgres_005.sql",
    "postgres_006.sql",
    "postgres_007.sql",
    "postgres_008.sql",
)
NEW_COLUMNS_SQL = ", ".join(NEW_TASK_COLUMNS)
NEW_COLUMNS_TYPED = ", ".join(f"{c} {'bigint' if c.endswith('_ms') else 'text'}" for c in NEW_TASK_COLUMNS)
CHANNEL = "videosynth_tasks"
MIGRATION_LOCK = 0x7669_6465  # constants shared by every videosynth process
ACCOUNT_LOCK_SPACE = 0x7669_0001
MAINTENANCE_LOCK_SPACE = 0x7669_0002
QUEUE_LOCK_SPACE = 0x7669_0003


def _close(conn: psycopg.Connection[Any]) -> None:
    conn.close()


class PostgresTaskStore(SqlTaskStore):
    inline_reads = False

    def __init__(self, url: str) -> None:
        self.url = url
        self._conns: ThreadConnections[psycopg.Connection[Any]] = ThreadConnections(self._connect, _close)
        self._lock = threading.Lock()
        self._listener: psycopg.Connection[Any] | None = None

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self.url, autocommit=True, row_factory=dict_row, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise store_unavailable(exc) from exc

    def _conn(self) -> psycopg.Connection[Any]:
        return self._conns.get(lambda conn: not conn.closed)

    @contextlib.contextmanager
    def _db(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            yield self._conn()
        except psycopg.OperationalError as exc:
            # The connection may be dead (server restart): drop it so the next call reconnects.
            self._conns.drop()
            raise store_unavailable(exc) from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[Any]]:
        with self._db() as conn, conn.transaction():
            yield conn

    def _execute(
        self, conn: psycopg.Connection[Any], sql: str, args: Collection[Any] = ()
    ) -> psycopg.Cursor[Any]:
        return conn.execute(sql.replace("?", "%s"), tuple(args))

    def create_many(self, tasks: Sequence[NewTask], caps: Mapping[str, QueueCap] | None = None) -> None:
        # One autocommit statement, whatever the batch size: a transaction of its own, one round trip, one
        # plan. The rows travel as two JSON documents: per-row INSERTs cost the database server (which
        # shares the API's cores) several times more, and psycopg's array adaptation is pure Python. Queue
        # caps need their counts and the insert in one transaction.
        if not tasks:
            return
        # In account and key order: the pending counts lock one counter row per account and key, and
        # batches committed at once by several replicas must take them in the same order.
        tasks = sorted(tasks, key=lambda t: (t.account_id, t.api_key_id))
        task_rows, media_rows = new_task_rows(tasks)
        capped = bool(caps) and any(c.limit > 0 for c in caps.values())  # type: ignore[union-attr]
        with self._transaction() if capped else self._db() as conn:
            if capped:
                self._check_caps(conn, tasks, caps)
            conn.execute(
                f"WITH new_tasks AS (INSERT INTO tasks ({NEW_COLUMNS_SQL})"
                f" SELECT {NEW_COLUMNS_SQL} FROM json_to_recordset(%s::json) AS r({NEW_COLUMNS_TYPED})),"
                " new_media AS (INSERT INTO task_media (task_id, position, url)"
                " SELECT task_id, position, url FROM json_to_recordset(%s::json)"
                " AS m(task_id text, position int, url text)),"
                # The batch's PENDING tasks counted per account and key (schema 7), in scope order.
                " counted AS (INSERT INTO pending_counts (scope, n)"
                " SELECT scope, n FROM json_to_recordset(%s::json) AS c(scope text, n bigint) ORDER BY scope"
                " ON CONFLICT (scope) DO UPDATE SET n = pending_counts.n + excluded.n)"
                " SELECT pg_notify(%s, '')",
                (
                    orjson.dumps(
                        [dict(zip(NEW_TASK_COLUMNS, row, strict=True)) for row in task_rows]
                    ).decode(),
                    orjson.dumps(
                        [{"task_id": t, "position": i, "url": u} for t, i, u in media_rows]
                    ).decode(),
                    orjson.dumps([{"scope": s, "n": n} for s, n in count_new_pending(tasks)]).decode(),
                    CHANNEL,
                ),
            )

    # SKIP LOCKED lets concurrent claims pass each other instead of queueing on the same row.
    _candidate_lock = " FOR UPDATE OF t SKIP LOCKED"
    _delivery_lock = " FOR UPDATE OF d SKIP LOCKED"

    def _account_has_room(self, conn: psycopg.Connection[Any], account_id: str, limit: int) -> bool:
        # Two claims for one account can both pass the candidate query's count; serialize them per account
        # and count again. The lock is released at commit, after our UPDATE is visible.
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (ACCOUNT_LOCK_SPACE, account_id))
        row = conn.execute(
            "SELECT count(*) AS n FROM tasks WHERE account_id = %s AND status = 'RUNNING'", (account_id,)
        ).fetchone()
        return bool(row is not None and row["n"] < limit)

    def _lock_queue(self, conn: psycopg.Connection[Any], scope: str) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (QUEUE_LOCK_SPACE, scope))

    def _try_maintenance_lock(self, conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute(
            "SELECT pg_try_advisory_xact_lock(%s, 0) AS ok", (MAINTENANCE_LOCK_SPACE,)
        ).fetchone()
        return bool(row and row["ok"])

    def _after_create(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(f"NOTIFY {CHANNEL}")

    def close(self) -> None:
        self._conns.close_all()
        with self._lock:
            if self._listener is not None:
                with contextlib.suppress(psycopg.Error):
                    self._listener.close()
            self._listener = None

    def migrate(self) -> int:
        with self._transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_ms BIGINT)"
            )
            done = {r["version"] for r in conn.execute("SELECT version FROM schema_migrations")}
            for version, name in enumerate(MIGRATIONS, start=1):
                if version in done:
                    continue
                for statement in split_statements(
                    resources.files("videosynth.tasks").joinpath("sql", name).read_text()
                ):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, applied_ms) VALUES (%s, %s)",
                    (version, int(time.time() * 1000)),
                )
            return len(MIGRATIONS)

    def wait_for_work(self, timeout: float) -> None:
        """Block until a NOTIFY for new work arrives or ``timeout`` passes."""
        try:
            if self._listener is None or self._listener.closed:
                self._listener = self._connect()
                self._listener.execute(f"LISTEN {CHANNEL}")
            for _ in self._listener.notifies(timeout=timeout, stop_after=1):
                break
        except psycopg.OperationalError:
            self._listener = None
            time.sleep(timeout)
