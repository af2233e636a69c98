"""The PostgreSQL :class:`~pacificpy.background.backends.state.TaskState`: outcomes, dead
letters, idempotency keys and delivery counts as rows (statements in :mod:`.sql`).

Connections (psycopg 3, autocommit) belong to the process that opened them: a forked
child (a Celery prefork process) sees another pid and opens its own, never sharing the
parent's sockets. Idle ones are kept for reuse, a few per process. The tables are created
on the first connection of each process (``CREATE TABLE IF NOT EXISTS``, under an
advisory lock). The end of a delivery is one transaction sent in one round trip
(psycopg's pipeline mode). Expired outcomes, keys and counts are deleted in batches, one
batch every :data:`EXPIRE_EVERY` ends of deliveries.

The async methods run the sync ones on a thread: an event loop waiting for a result never
blocks on the database.

Tombstones are rows announced with ``NOTIFY`` (:mod:`.cancels` keeps each process's copy),
schedule slots a compare-and-set ``UPDATE``, worker records rows with an expiry, and an
admission of flow control one transaction under an advisory lock of the task name, timed
by the server's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson

from pacificpy.background import cancellation
from pacificpy.background.backends.postgres import sql
from pacificpy.background.backends.postgres.cancels import CancelWatcher
from pacificpy.background.backends.state import Ending, TaskState
from pacificpy.background.dead_letter import DeadLetter
from pacificpy.background.task import Outcome
from pacificpy.errors import BackendNotAvailable

if TYPE_CHECKING:
    import psycopg

    from pacificpy.background.flow import Rate

__all__ = ["EXPIRE_EVERY", "MAX_DEAD_LETTERS", "PostgresTaskState"]

#: Dead letters kept; the oldest go past it (as with Redis and SQLite).
MAX_DEAD_LETTERS = 10_000
#: One batch of expired rows is deleted every this many ends of deliveries (per process).
EXPIRE_EVERY = 1000
#: Idle connections kept per process.
_IDLE_MAX = 4


def _letter(raw: Any) -> DeadLetter:
    return DeadLetter.from_dict(orjson.loads(raw))


class PostgresTaskState(TaskState):
    """A :class:`TaskState` in PostgreSQL.

    Args:
        url: a libpq connection string or URL (``postgresql://user@host/db``).
        result_ttl: seconds outcomes (and delivery counts) are kept.
        connect_timeout: seconds a connection attempt may take.

    Raises:
        BackendNotAvailable: psycopg is not installed (``pip install -e '.[postgres]'``).
    """

    def __init__(
        self, url: str, *, result_ttl: float = 86_400.0, connect_timeout: float = 5.0
    ) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:  # pragma: no cover - the extra is installed in tests
            raise BackendNotAvailable(
                "PostgresTaskState needs psycopg 3: pip install -e '.[postgres]'"
            ) from exc
        self.url = url
        self.result_ttl = result_ttl
        self.connect_timeout = connect_timeout
        self.max_dead_letters = MAX_DEAD_LETTERS
        self._lock = threading.Lock()
        self._idle: list[psycopg.Connection[Any]] = []
        self._pid = 0
        self._ends = 0
        self.watcher = CancelWatcher(self._open, self._is_buried)

    def __repr__(self) -> str:
        from pacificpy.background.backends._common import safe_url

        return f"<PostgresTaskState {safe_url(self.url)}>"

    # -- connections -----------------------------------------------------------------------
    def _open(self) -> psycopg.Connection[Any]:
        import psycopg

        timeout = max(1, math.ceil(self.connect_timeout))  # libpq takes whole seconds
        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=timeout)
        with conn.transaction():
            conn.execute(sql.LOCK_SCHEMA, (sql.SCHEMA_LOCK,))
            for statement in sql.SCHEMA:
                conn.execute(statement)
        return conn

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection of this process, given back after use (closed if it broke)."""
        pid = os.getpid()
        conn = None
        with self._lock:
            if self._pid != pid:  # a forked child: the parent's sockets are not ours
                self._idle, self._pid = [], pid
            if self._idle:
                conn = self._idle.pop()
        if conn is None:
            conn = self._open()
        try:
            yield conn
        except BaseException:
            conn.close()  # a failed statement may leave it unusable: open a fresh one
            raise
        with self._lock:
            if self._pid == pid and len(self._idle) < _IDLE_MAX and not conn.closed:
                self._idle.append(conn)
                return
        conn.close()

    def _one(self, statement: str, params: tuple[Any, ...]) -> Any:
        with self.connection() as conn:
            row = conn.execute(statement, params).fetchone()
        return None if row is None else row[0]

    def _write(self, statement: str, params: tuple[Any, ...] = ()) -> int:
        with self.connection() as conn:
            return conn.execute(statement, params).rowcount

    # -- outcomes --------------------------------------------------------------------------
    def get_outcome(self, task_id: str) -> Outcome | None:
        raw = self._one(sql.GET_OUTCOME, (task_id, time.time()))
        return None if raw is None else Outcome.from_dict(orjson.loads(raw))

    async def aget_outcome(self, task_id: str) -> Outcome | None:
        return await asyncio.to_thread(self.get_outcome, task_id)

    def store_outcome(self, task_id: str, outcome: Outcome) -> None:
        self.finish(Ending(task_id, outcome))

    def clear_outcome(self, task_id: str) -> None:
        self._write(sql.CLEAR_OUTCOME, (task_id,))

    # -- dead letters ----------------------------------------------------------------------
    def add_dead_letter(self, letter: DeadLetter) -> None:
        with self.connection() as conn, conn.transaction():
            data = orjson.dumps(letter.to_dict())
            conn.execute(sql.ADD_LETTER, (letter.id, letter.failed_at, data))
            row = conn.execute(sql.COUNT_LETTERS).fetchone()
            if row is not None and row[0] > self.max_dead_letters:
                conn.execute(sql.TRIM_LETTERS, (self.max_dead_letters,))

    async def aadd_dead_letter(self, letter: DeadLetter) -> None:
        await asyncio.to_thread(self.add_dead_letter, letter)

    def list_dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self.connection() as conn:
            rows = conn.execute(sql.LIST_LETTERS, (limit,)).fetchall()
        return [_letter(r[0]) for r in rows]

    def get_dead_letter(self, letter_id: str) -> DeadLetter | None:
        raw = self._one(sql.GET_LETTER, (letter_id,))
        return None if raw is None else _letter(raw)

    def pop_dead_letter(self, letter_id: str) -> DeadLetter | None:
        raw = self._one(sql.POP_LETTER, (letter_id,))
        return None if raw is None else _letter(raw)

    def clear_dead_letters(self) -> int:
        return self._write(sql.CLEAR_LETTERS)

    # -- idempotency keys ------------------------------------------------------------------
    def claim(self, name: str, key: str, task_id: str, ttl: float) -> bool:
        now = time.time()
        return self._write(sql.CLAIM_KEY, (name, key, task_id, now + ttl, now)) > 0

    def release(self, name: str, key: str) -> None:
        self._write(sql.RELEASE_KEY, (name, key))

    # -- delivery counts -------------------------------------------------------------------
    def count_delivery(self, task_id: str, attempt: int) -> int:
        expires = time.time() + self.result_ttl
        return int(self._one(sql.COUNT_DELIVERY, (task_id, attempt, expires)))

    def forget_deliveries(self, task_id: str, attempt: int) -> None:
        self._write(sql.FORGET_DELIVERIES, (task_id, attempt))

    # -- tombstones (cancels.py) ---------------------------------------------------------
    keeps_tombstones = True

    def cancel(self, task_id: str, outcome: Outcome, ttl: float) -> bool:
        now = time.time()
        raw = outcome.to_json()
        with self.connection() as conn, conn.transaction():
            stored = conn.execute(
                sql.CANCEL_OUTCOME, (task_id, raw, now + self.result_ttl, now)
            ).rowcount
            if stored:
                conn.execute(sql.BURY, (task_id, now + ttl))
                note = f"{task_id} {now + ttl!r}"
                conn.execute(sql.ANNOUNCE, (sql.CANCEL_CHANNEL, note))
        if stored:
            cancellation.deliver(task_id)  # it may run in this very process
        return bool(stored)

    def is_cancelled(self, task_id: str) -> bool:
        return self.watcher.is_cancelled(task_id)

    def _is_buried(self, task_id: str) -> bool:
        return self._one(sql.IS_BURIED, (task_id, time.time())) is not None

    # -- schedule slots --------------------------------------------------------------------
    keeps_schedules = True

    def last_schedule_slot(self, name: str) -> float | None:
        slot = self._one(sql.LAST_SCHEDULE_SLOT, (name,))
        return None if slot is None else float(slot)

    def advance_schedule_slot(self, name: str, slot: float, expected: float | None) -> bool:
        if expected is None:
            return self._write(sql.FIRST_SCHEDULE_SLOT, (name, float(slot))) > 0
        params = (float(slot), name, float(expected), float(slot))
        return self._write(sql.ADVANCE_SCHEDULE_SLOT, params) > 0

    # -- the worker registry ---------------------------------------------------------------
    keeps_workers = True

    def put_worker(self, worker_id: str, record: dict[str, Any], ttl: float) -> None:
        self._write(sql.PUT_WORKER, (worker_id, orjson.dumps(record), time.time() + ttl))

    async def aput_worker(self, worker_id: str, record: dict[str, Any], ttl: float) -> None:
        await asyncio.to_thread(self.put_worker, worker_id, record, ttl)

    def remove_worker(self, worker_id: str) -> None:
        self._write(sql.REMOVE_WORKER, (worker_id,))

    async def aremove_worker(self, worker_id: str) -> None:
        await asyncio.to_thread(self.remove_worker, worker_id)

    def list_worker_records(self) -> list[dict[str, Any]]:
        with self.connection() as conn:
            rows = conn.execute(sql.LIST_WORKERS, (time.time(),)).fetchall()
        return [orjson.loads(r[0]) for r in rows]

    # -- flow control ----------------------------------------------------------------------
    def admit(
        self, name: str, holder: str, concurrency: int | None, rate: Rate | None, lease: float
    ) -> tuple[str, float] | None:
        with self.connection() as conn, conn.transaction():
            row = conn.execute(sql.LOCK_FLOW, (sql.FLOW_LOCK, name)).fetchone()
            now = float(row[1]) if row is not None else time.time()
            if concurrency is not None:
                conn.execute(sql.DROP_EXPIRED_SLOTS, (name, now))
                held = conn.execute(sql.COUNT_SLOTS, (name,)).fetchone()
                if held is not None and held[0] >= concurrency:
                    return "concurrency", 0.0
            if rate is not None:
                conn.execute(sql.DROP_OLD_STARTS, (name, now - rate.per))
                window = conn.execute(sql.WINDOW, (name,)).fetchone()
                if window is not None and window[0] >= rate.count:
                    return "rate_limit", max(0.0, float(window[1]) + rate.per - now)
                conn.execute(sql.ADD_START, (name, now, now + rate.per))
            if concurrency is not None:
                conn.execute(sql.TAKE_SLOT, (name, holder, now + lease))
        return None

    async def aadmit(
        self, name: str, holder: str, concurrency: int | None, rate: Rate | None, lease: float
    ) -> tuple[str, float] | None:
        return await asyncio.to_thread(self.admit, name, holder, concurrency, rate, lease)

    def renew_slots(self, held: list[tuple[str, str]], lease: float) -> None:
        if not held:
            return
        names = [name for name, _ in held]
        holders = [holder for _, holder in held]
        self._write(sql.RENEW_SLOTS, (lease, names, holders))

    def release_slot(self, name: str, holder: str) -> None:
        self._write(sql.RELEASE_SLOT, (name, holder))

    async def arelease_slot(self, name: str, holder: str) -> None:
        await asyncio.to_thread(self.release_slot, name, holder)

    # -- the end of a delivery, one transaction in one round trip --------------------------
    def finish(self, end: Ending) -> None:
        steps: list[tuple[str, tuple[Any, ...]]] = []
        if end.deliveries is not None:
            steps.append((sql.FORGET_DELIVERIES, end.deliveries))
        if end.release is not None:
            steps.append((sql.RELEASE_KEY, end.release))
        if end.task_id is not None and end.outcome is not None:
            outcome = end.outcome.to_json()
            steps.append((sql.STORE_OUTCOME, (end.task_id, outcome, time.time() + self.result_ttl)))
        if not steps:
            return
        with self.connection() as conn:
            if len(steps) == 1:
                conn.execute(*steps[0])
            else:
                with conn.pipeline(), conn.transaction():
                    for statement, params in steps:
                        conn.execute(statement, params)
        self._ends += 1
        if self._ends % EXPIRE_EVERY == 0:
            self.expire()

    async def afinish(self, end: Ending) -> None:
        await asyncio.to_thread(self.finish, end)

    # -- retention -------------------------------------------------------------------------
    def expire(self, batch: int = 1000) -> int:
        """Delete a batch of expired outcomes, keys and delivery counts; return how many."""
        now = time.time()
        with self.connection() as conn:
            return sum(conn.execute(s, (now, batch)).rowcount for s in sql.EXPIRE)

    def ping(self) -> None:
        """One round trip to PostgreSQL (health checks)."""
        self._one("SELECT 1", ())

    # -- resources -------------------------------------------------------------------------
    def close(self) -> None:
        """Close this process's idle connections and stop its cancel watcher (the state
        reconnects when used again)."""
        self.watcher.stop()
        with self._lock:
            idle, self._idle = self._idle, []
            mine = self._pid == os.getpid()
        if mine:
            for conn in idle:
                conn.close()
