"""SQLite task store: the embedded default (WAL, one file, many processes on one host).

SQLite has no ``NOTIFY``, so new work is announced through a *doorbell*: a named pipe (FIFO) next to the
database file. Every idle worker waits on it with ``select``; a committed submit (or a task handed back
to the queue) writes one byte, which wakes the workers at once instead of at their next poll. Each waiter
reads one byte per wake-up, so N submits can wake N workers. The pipe is only a hint: a byte nobody needed
costs one empty claim, a lost one costs one poll interval, and without the pipe (``:memory:``, a file in its
way, a filesystem without FIFOs) the workers simply poll.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import select
import sqlite3
import stat
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from videosynth.tasks.sqlstore import SqlTaskStore, ThreadConnections, store_unavailable

log = logging.getLogger(__name__)

MIGRATIONS = (
    "sqlite_001.sql",
    "sqlite_002.sql",
    "sqlite_003.sql",
    "sqlite_004.sql",
    "sqlite_005.sql",
    "sqlite_006.sql",
    "sqlite_007.sql",
    "sqlite_008.sql",
)


_BEGIN = re.compile(r"\bBEGIN\b")


def split_statements(sql: str) -> list[str]:
    # Comments go first: they may contain semicolons.
    sql = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    statements: list[str] = []
    current = ""
    for piece in sql.split(";"):
        current = f"{current};{piece}" if current else piece
        # A trigger's BEGIN ... END and a $$-quoted function body hold semicolons of their own.
        upper = current.upper()
        if current.count("$$") % 2 == 1 or (
            "CREATE TRIGGER" in upper and _BEGIN.search(upper) and not upper.rstrip().endswith("END")
        ):
            continue
        if current.strip():
            statements.append(current)
        current = ""
    if current.strip():
        statements.append(current)
    return statements


def _close(conn: sqlite3.Connection) -> None:
    conn.close()


class SqliteTaskStore(SqlTaskStore):
    """One connection per thread, in autocommit mode; BEGIN IMMEDIATE where a read-then-write must be atomic."""

    inline_reads = True

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conns: ThreadConnections[sqlite3.Connection] = ThreadConnections(self._connect, _close)
        self._lock = threading.Lock()
        self.doorbell_path = None if self.path == ":memory:" else self.path + ".wake"
        self._doorbell_fd: int | None = None
        self._doorbell_unusable = False

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _conn(self) -> sqlite3.Connection:
        return self._conns.get()

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._conn()
        except sqlite3.OperationalError as exc:
            raise store_unavailable(exc) from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._db() as conn:
            self._local.ring = False
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            # After COMMIT, not before: a worker woken earlier would not see the new row yet.
            if self._local.ring:
                self._ring()

    def _after_create(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            self._local.ring = True  # rung by _transaction after its COMMIT
        else:
            self._ring()  # an autocommit statement: already committed

    def _ring(self) -> None:
        if self.doorbell_path is None:
            return
        try:
            # Non-blocking open fails with ENXIO when no worker is waiting: then there is nobody to wake.
            fd = os.open(self.doorbell_path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                os.write(fd, b"\x01")
        except OSError:
            pass  # EAGAIN: the pipe is full of unread rings, which will wake the workers anyway
        finally:
            os.close(fd)

    def _execute(self, conn: sqlite3.Connection, sql: str, args: Collection[Any] = ()) -> sqlite3.Cursor:
        return conn.execute(sql, tuple(args))

    def _execute_many(self, conn: sqlite3.Connection, sql: str, rows: Sequence[Collection[Any]]) -> None:
        if rows:
            conn.executemany(sql, [tuple(r) for r in rows])

    def _try_maintenance_lock(self, conn: sqlite3.Connection) -> bool:
        # BEGIN IMMEDIATE already made this the only writer on the database.
        return True

    def close(self) -> None:
        self._conns.close_all()
        with self._lock:
            if self._doorbell_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._doorbell_fd)
                self._doorbell_fd = None
        self._local = threading.local()

    def migrate(self) -> int:
        with self._transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_ms INTEGER)"
            )
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for version, name in enumerate(MIGRATIONS, start=1):
                if version in done:
                    continue
                for statement in split_statements(
                    resources.files("videosynth.tasks").joinpath("sql", name).read_text()
                ):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, applied_ms) VALUES (?, ?)",
                    (version, int(time.time() * 1000)),
                )
            return len(MIGRATIONS)

    def wait_for_work(self, timeout: float) -> None:
        """Block until the doorbell rings (a submit was committed) or ``timeout`` passes."""
        fd = self._open_doorbell()
        if fd is None:
            time.sleep(timeout)
            return
        readable, _, _ = select.select([fd], [], [], timeout)
        if readable:
            with contextlib.suppress(BlockingIOError):
                os.read(fd, 1)

    def _open_doorbell(self) -> int | None:
        if self._doorbell_fd is not None or self._doorbell_unusable or self.doorbell_path is None:
            return self._doorbell_fd
        try:
            with contextlib.suppress(FileExistsError):
                os.mkfifo(self.doorbell_path, 0o600)
            # Read-write, so the pipe always has a writer: a FIFO whose last writer closed reads as
            # end-of-file, which select would report as readable forever.
            fd = os.open(self.doorbell_path, os.O_RDWR | os.O_NONBLOCK)
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                os.close(fd)
                raise OSError(errno.EINVAL, "not a FIFO", self.doorbell_path)
        except OSError as exc:
            log.warning("no doorbell at %s (%s); idle workers will poll", self.doorbell_path, exc)
            self._doorbell_unusable = True
            return None
        self._doorbell_fd = fd
        return fd
