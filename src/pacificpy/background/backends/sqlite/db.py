"""One SQLite file shared by every thread and process: connections, transactions, checks.

Each thread of each process has its own connection (``sqlite3`` connections must not be
shared across threads, nor survive a fork). Every connection runs in WAL mode with
``synchronous=NORMAL``: a commit survives ``kill -9`` of any process (it is in the WAL
file, which the next opener replays); only a power loss or OS crash can lose the last
commits before a checkpoint. A writer waits up to ``busy_timeout`` for another
process's lock, trying again every few hundred microseconds (SQLite's own busy handler
sleeps whole milliseconds, which halves the throughput of two busy processes).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from pacificpy.background.backends.sqlite import sql
from pacificpy.errors import BackendError

__all__ = ["Database", "DatabaseError"]

T = TypeVar("T")
_SQLITE_BUSY = 5  # sqlite3.SQLITE_BUSY, named there from Python 3.11
logger = logging.getLogger("pacificpy.background")

#: Seconds between two passive checkpoints of a process's checkpoint thread.
CHECKPOINT_EVERY = 0.25
#: WAL pages after which a commit checkpoints itself (if the thread could not).
SAFETY_CHECKPOINT_PAGES = 20_000
#: Bytes the WAL file is cut back to once a checkpoint has emptied it.
WAL_SIZE_LIMIT = 64 * 1024 * 1024


def _busy(exc: sqlite3.OperationalError) -> bool:
    """True for SQLITE_BUSY: another connection holds the lock (try again)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF == _SQLITE_BUSY)
    return "database is locked" in str(exc)


class DatabaseError(BackendError):
    """The SQLite file cannot be used: not a database, not writable, locked, newer schema."""


class _Work:
    """One thread's part of a group commit."""

    __slots__ = ("done", "error", "result", "work")

    def __init__(self, work: Callable[[], Any]) -> None:
        self.work = work
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False

    def run(self) -> None:
        try:
            self.result = self.work()
        except Exception as exc:
            self.error = exc


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
        self._batch_lock = threading.Lock()
        self._batch: list[_Work] = []
        self._checked_pid = 0
        self._checkpointer_pid = 0
        self._checkpointer_stop = threading.Event()

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
        if self._checkpointer_pid != os.getpid():
            self._start_checkpointer()
        return conn

    def _open(self, busy_timeout: float = 0.0) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=busy_timeout,  # 0: SQLITE_BUSY at once, waited for by _waiting()
            isolation_level=None,  # autocommit; transactions are explicit (atomic())
            check_same_thread=False,  # used by one thread; closed by close() from any
        )
        # Checkpoints (copying the WAL into the file, with an fsync) run on this process's
        # checkpoint thread, not in the commit that crosses the threshold: an enqueue never
        # waits for a disk flush. The high threshold is a safety net only.
        for pragma in (
            "synchronous=NORMAL",
            f"wal_autocheckpoint={SAFETY_CHECKPOINT_PAGES}",
            f"journal_size_limit={WAL_SIZE_LIMIT}",
        ):
            self._waiting(functools.partial(conn.execute, f"PRAGMA {pragma}"))
        return conn

    def _start_checkpointer(self) -> None:
        """One daemon thread per process: a passive checkpoint every ``CHECKPOINT_EVERY``
        seconds (nothing to do costs a read of shared memory; it never blocks writers)."""
        with self._lock:
            if self._checkpointer_pid == os.getpid():
                return
            self._checkpointer_pid = os.getpid()
            stop = self._checkpointer_stop = threading.Event()
        threading.Thread(
            target=self._checkpoint_loop, args=(stop,), name="pacificpy-sqlite-checkpoint",
            daemon=True,
        ).start()  # fmt: skip

    def _checkpoint_loop(self, stop: threading.Event) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not stop.wait(CHECKPOINT_EVERY):
                try:
                    conn = conn or self._open()
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except Exception as exc:  # busy, or the file went away: try again later
                    logger.debug("checkpoint of %s skipped: %s", self.path, exc)
        finally:
            if conn is not None:
                conn.close()

    def _waiting(self, call: Callable[[], T]) -> T:
        """``call()``, again while another connection holds the lock, up to
        ``busy_timeout`` seconds (then its ``database is locked`` error)."""
        try:
            return call()
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
        deadline = time.monotonic() + self.busy_timeout
        pause = 0.00005
        while True:
            time.sleep(pause)  # another process holds the write lock: back off briefly
            try:
                return call()
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() >= deadline:
                    raise
            pause = min(pause * 2, 0.002)

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
            conn = self._open(self.busy_timeout)
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
                columns = {r[0] for r in conn.execute(sql.TASK_COLUMNS)}
                if "priority" not in columns:  # a file from before priorities
                    conn.execute(sql.ADD_PRIORITY)
                conn.execute(sql.PRIORITY_INDEX)
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
            self._checkpointer_stop.set()
            self._checkpointer_pid = 0
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
            self._waiting(lambda: conn.execute("BEGIN IMMEDIATE"))
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

    def combined(self, work: Callable[[], T]) -> T:
        """Run ``work()`` in a write transaction shared with other threads' work (group
        commit): while one thread commits, the others queue theirs, and the next to get the
        lock commits them all at once, each in a savepoint of its own (one failing rolls
        back only itself). Returns what ``work`` returned, or raises what it raised.

        Inside :meth:`atomic` (or another ``combined``), ``work`` simply joins.
        """
        if self._local.depth:
            return work()
        item = _Work(work)
        with self._batch_lock:
            self._batch.append(item)
        with self._write_lock:
            if not item.done:
                with self._batch_lock:
                    batch, self._batch = self._batch, []
                self._commit_batch(batch)
        if item.error is not None:
            raise item.error
        return cast(T, item.result)

    def _commit_batch(self, batch: list[_Work]) -> None:
        conn = self.conn()
        local = self._local
        try:
            self._waiting(lambda: conn.execute("BEGIN IMMEDIATE"))
            local.depth = 1
            if len(batch) == 1:
                batch[0].run()
                if batch[0].error is not None:
                    conn.execute("ROLLBACK")
                    return
            else:
                for item in batch:
                    conn.execute("SAVEPOINT work")
                    item.run()
                    conn.execute("ROLLBACK TO work" if item.error else "RELEASE work")
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for item in batch:
                if item.error is None:
                    item.error = exc
        finally:
            local.depth = 0
            for item in batch:
                item.done = True

    def execute(self, statement: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """Run one statement that only reads."""
        conn = self.conn()
        return self._waiting(lambda: conn.execute(statement, params))

    def write(self, statement: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """Run one statement that writes (its own transaction unless inside :meth:`atomic`)."""
        conn = self.conn()
        if self._local.depth:
            return conn.execute(statement, params)
        with self._write_lock:
            return self._waiting(lambda: conn.execute(statement, params))

    def one(self, statement: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row, or None."""
        conn = self.conn()
        row = self._waiting(lambda: conn.execute(statement, params).fetchone())
        return None if row is None else row[0]
