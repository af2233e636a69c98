"""One SQLite file shared by every thread and process: connections, transactions, checks.

Each thread of each process has its own connection (``sqlite3`` connections must not be
shared across threads, nor survive a fork). Every connection runs in WAL mode with
``synchronous=NORMAL``: a commit survives ``kill -9`` of any process (it is in the WAL
file, which the next opener replays); only a power loss or OS crash can lose the last
commits before a checkpoint. ``busy_timeout`` makes a writer wait for another's lock
instead of failing at once.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pacificpy.background.backends.sqlite import sql
from pacificpy.errors import BackendError

__all__ = ["Database", "DatabaseError"]


class DatabaseError(BackendError):
    """The SQLite file cannot be used: not a database, not writable, locked, newer schema."""


class _Local(threading.local):
    conn: sqlite3.Connection | None = None
    pid: int = 0
    depth: int = 0


class Database:
    """The file at ``path``, opened lazily in each thread.

    Args:
        path: the database file (created with its directory's permissions if missing).
        busy_timeout: seconds a statement waits for another connection's write lock.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        self.path = os.fspath(path)
        self.busy_timeout = busy_timeout
        self._local = _Local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        #: One writer at a time in this process: threads queue here, in Python, rather
        #: than in SQLite's busy handler (which sleeps whole milliseconds between tries).
        self._write_lock = threading.Lock()
        self._checked_pid = 0

    def __repr__(self) -> str:
        return f"<Database {self.path!r}>"

    # -- connections ---------------------------------------------------------------------
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (a forked child opens its own)."""
        local = self._local
        conn = local.conn
        if conn is not None and local.pid == os.getpid():
            return conn
        if self._checked_pid != os.getpid():
            self.check()
        conn = self._open()
        local.conn, local.pid, local.depth = conn, os.getpid(), 0
        with self._lock:
            self._conns.append(conn)
        return conn

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,  # autocommit; transactions are explicit (atomic())
            check_same_thread=False,  # used by one thread; closed by close() from any
        )
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        return conn

    def check(self) -> None:
        """Open the file, create the schema if missing, and check it is usable for writing.

        Raises:
            DatabaseError: the path is a directory or unreadable, the file is not a SQLite
                database (or is corrupt), it cannot be written (read-only file or
                directory), it stays locked past ``busy_timeout``, or a newer PacificPy
                wrote its schema.
        """
        target = Path(self.path)
        if target.is_dir():
            raise DatabaseError(f"SQLite backend: {self.path} is a directory, not a database file")
        try:
            conn = self._open()
        except sqlite3.Error as exc:
            raise self._error("cannot open", exc) from exc
        try:
            # Must come before the first table; a no-op on an existing database.
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise DatabaseError(
                    f"SQLite backend: {self.path} cannot use WAL mode (journal_mode={mode}); "
                    "is it on a network file system?"
                )
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in sql.SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                row = conn.execute(sql.GET_VERSION).fetchone()
                if row is not None and int(row[0]) > sql.SCHEMA_VERSION:
                    raise DatabaseError(
                        f"SQLite backend: {self.path} has schema version {row[0]}, newer than "
                        f"this PacificPy's {sql.SCHEMA_VERSION}; upgrade PacificPy"
                    )
                conn.execute(sql.SET_VERSION, (str(sql.SCHEMA_VERSION),))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except DatabaseError:
            raise
        except sqlite3.Error as exc:
            raise self._error("cannot use", exc) from exc
        finally:
            conn.close()
        self._checked_pid = os.getpid()

    def _error(self, what: str, exc: sqlite3.Error) -> DatabaseError:
        return DatabaseError(
            f"SQLite backend {what} {self.path}: {exc} ({self.explain(exc)})", cause=exc
        )

    def explain(self, exc: BaseException) -> str:
        """What a SQLite error on this file means, and what to check."""
        text = str(exc)
        if "not a database" in text or "malformed" in text:
            return "it is not a SQLite database, or it is corrupt"
        if "readonly" in text or "read-only" in text or "unable to open" in text:
            return "check that the file and its directory exist and are writable by this process"
        if "locked" in text or "busy" in text:
            return f"another process held its write lock for more than {self.busy_timeout:g} s"
        if "disk" in text or "full" in text:
            return "is the disk full?"
        return type(exc).__name__

    def close(self) -> None:
        """Close every connection this object opened (any thread may open one again)."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = _Local()

    # -- statements ----------------------------------------------------------------------
    @contextlib.contextmanager
    def atomic(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``); nested blocks join the outer one."""
        conn = self.conn()
        local = self._local
        if local.depth:
            local.depth += 1
            try:
                yield conn
            finally:
                local.depth -= 1
            return
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            local.depth = 1
            try:
                yield conn
            except BaseException:
                local.depth = 0
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            local.depth = 0
            conn.execute("COMMIT")

    def execute(self, statement: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """Run one statement that only reads."""
        return self.conn().execute(statement, params)

    def write(self, statement: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """Run one statement that writes (its own transaction unless inside :meth:`atomic`)."""
        conn = self.conn()
        if self._local.depth:
            return conn.execute(statement, params)
        with self._write_lock:
            return conn.execute(statement, params)

    def one(self, statement: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row, or None."""
        row = self.conn().execute(statement, params).fetchone()
        return None if row is None else row[0]
