"""SQLite task store: the embedded default (WAL, one file, many processes on one host)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from videosynth.errors import StoreError
from videosynth.tasks.sqlstore import SqlTaskStore

MIGRATIONS = ("sqlite_001.sql",)


def split_statements(sql: str) -> list[str]:
    # Comments go first: they may contain semicolons.
    sql = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s for s in sql.split(";") if s.strip()]


class SqliteTaskStore(SqlTaskStore):
    """One connection per thread, in autocommit mode; BEGIN IMMEDIATE where a read-then-write must be atomic."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._conn()
        except sqlite3.OperationalError as exc:
            raise StoreError(f"task store unavailable: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._db() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _execute(self, conn: sqlite3.Connection, sql: str, args: Collection[Any] = ()) -> sqlite3.Cursor:
        return conn.execute(sql, tuple(args))

    def _try_maintenance_lock(self, conn: sqlite3.Connection) -> bool:
        # BEGIN IMMEDIATE already made this the only writer on the database.
        return True

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
        self._local = threading.local()

    def migrate(self) -> int:
        with self._transaction() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_ms INTEGER)")
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for version, name in enumerate(MIGRATIONS, start=1):
                if version in done:
                    continue
                for statement in split_statements(resources.files("videosynth.tasks").joinpath("sql", name).read_text()):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, applied_ms) VALUES (?, ?)", (version, int(time.time() * 1000))
                )
            return len(MIGRATIONS)

    def wait_for_work(self, timeout: float) -> None:
        """SQLite has no notifications: the caller's poll interval is the wake-up."""
        time.sleep(timeout)
