"""The SQL :class:`~pacificpy.background.backends.state.TaskState`: outcomes, dead letters,
idempotency keys, delivery counts and flow control (concurrency leases, rate windows) as
rows of the backend's SQLite file.

Every method is one statement or one short ``BEGIN IMMEDIATE`` transaction; a caller that
wants several in one commit (the end of a delivery together with its queue row) wraps
them in :meth:`Database.atomic`. Outcomes and keys carry an expiry; :meth:`expire` deletes
what has passed it, in batches.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from pacificpy.background import cancellation
from pacificpy.background.backends.sqlite import sql
from pacificpy.background.backends.sqlite.cancels import CancelWatcher
from pacificpy.background.backends.sqlite.db import Database
from pacificpy.background.backends.state import Ending, TaskState
from pacificpy.background.dead_letter import DeadLetter
from pacificpy.background.task import Outcome

if TYPE_CHECKING:
    from pacificpy.background.flow import Rate

__all__ = ["MAX_DEAD_LETTERS", "SQLiteTaskState"]

#: Dead letters kept; the oldest go past it (as with Redis).
MAX_DEAD_LETTERS = 10_000


def _letter(raw: Any) -> DeadLetter:
    return DeadLetter.from_dict(orjson.loads(raw))


class SQLiteTaskState(TaskState):
    """A :class:`TaskState` in a SQLite file.

    Args:
        db: the file.
        result_ttl: seconds outcomes (and delivery counts) are kept.
    """

    def __init__(self, db: Database, *, result_ttl: float = 86_400.0) -> None:
        self.db = db
        self.result_ttl = result_ttl
        self.max_dead_letters = MAX_DEAD_LETTERS
        self.watcher = CancelWatcher(db)

    # -- outcomes ------------------------------------------------------------------------
    def get_outcome(self, task_id: str) -> Outcome | None:
        raw = self.db.one(sql.GET_OUTCOME, (task_id, time.time()))
        return None if raw is None else Outcome.from_dict(orjson.loads(raw))

    def store_outcome(self, task_id: str, outcome: Outcome) -> None:
        self.finish(Ending(task_id, outcome))

    def clear_outcome(self, task_id: str) -> None:
        self.db.write(sql.CLEAR_OUTCOME, (task_id,))

    # -- dead letters --------------------------------------------------------------------
    def add_dead_letter(self, letter: DeadLetter) -> None:
        with self.db.atomic() as conn:
            conn.execute(
                sql.ADD_LETTER, (letter.id, letter.failed_at, orjson.dumps(letter.to_dict()))
            )
            extra = conn.execute(sql.COUNT_LETTERS).fetchone()[0] - self.max_dead_letters
            if extra > 0:
                conn.execute(sql.TRIM_LETTERS, (extra,))

    def list_dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return [_letter(r[0]) for r in self.db.execute(sql.LIST_LETTERS, (limit,))]

    def get_dead_letter(self, letter_id: str) -> DeadLetter | None:
        raw = self.db.one(sql.GET_LETTER, (letter_id,))
        return None if raw is None else _letter(raw)

    def pop_dead_letter(self, letter_id: str) -> DeadLetter | None:
        with self.db.atomic() as conn:
            row = conn.execute(sql.POP_LETTER, (letter_id,)).fetchone()
        return None if row is None else _letter(row[0])

    def clear_dead_letters(self) -> int:
        with self.db.atomic() as conn:
            return conn.execute(sql.CLEAR_LETTERS).rowcount

    # -- idempotency keys ----------------------------------------------------------------
    def claim(self, name: str, key: str, task_id: str, ttl: float) -> bool:
        now = time.time()
        cur = self.db.write(sql.CLAIM_KEY, (name, key, task_id, now + ttl, now))
        return cur.rowcount > 0

    def release(self, name: str, key: str) -> None:
        self.db.write(sql.RELEASE_KEY, (name, key))

    # -- delivery counts -----------------------------------------------------------------
    def count_delivery(self, task_id: str, attempt: int) -> int:
        with self.db.atomic() as conn:
            expires = time.time() + self.result_ttl
            row = conn.execute(sql.COUNT_DELIVERY, (task_id, attempt, expires)).fetchone()
        return int(row[0])

    def forget_deliveries(self, task_id: str, attempt: int) -> None:
        self.db.write(sql.FORGET_DELIVERIES, (task_id, attempt))

    # -- tombstones ----------------------------------------------------------------------
    keeps_tombstones = True

    def cancel(self, task_id: str, outcome: Outcome, ttl: float) -> bool:
        now = time.time()
        with self.db.atomic() as conn:
            if conn.execute(sql.GET_OUTCOME, (task_id, now)).fetchone() is not None:
                return False
            conn.execute(sql.BURY, (task_id, now + ttl))
            raw = outcome.to_json()
            conn.execute(sql.STORE_OUTCOME, (task_id, raw, now + self.result_ttl))
        cancellation.deliver(task_id)  # it may run in this very process
        return True

    def is_cancelled(self, task_id: str) -> bool:
        """One indexed read per delivery (a local file); the watcher, started with the
        first delivery, reaches tasks already running when another process cancels."""
        self.watcher.start()
        return self.db.one(sql.IS_BURIED, (task_id, time.time())) is not None

    # -- schedule slots ------------------------------------------------------------------
    keeps_schedules = True

    def last_schedule_slot(self, name: str) -> float | None:
        slot = self.db.one(sql.LAST_SCHEDULE_SLOT, (name,))
        return None if slot is None else float(slot)

    def advance_schedule_slot(self, name: str, slot: float, expected: float | None) -> bool:
        if expected is None:
            cur = self.db.write(sql.FIRST_SCHEDULE_SLOT, (name, float(slot)))
        else:
            cur = self.db.write(sql.ADVANCE_SCHEDULE_SLOT, (slot, name, expected, slot))
        return cur.rowcount > 0

    # -- the worker registry -------------------------------------------------------------
    keeps_workers = True

    def put_worker(self, worker_id: str, record: dict[str, Any], ttl: float) -> None:
        self.db.write(sql.PUT_WORKER, (worker_id, orjson.dumps(record), time.time() + ttl))

    def remove_worker(self, worker_id: str) -> None:
        self.db.write(sql.REMOVE_WORKER, (worker_id,))

    def list_worker_records(self) -> list[dict[str, Any]]:
        return [orjson.loads(r[0]) for r in self.db.execute(sql.LIST_WORKERS, (time.time(),))]

    def ping(self) -> None:
        self.db.one(sql.PING)

    # -- flow control (concurrency leases, rate windows) ---------------------------------
    def admit(
        self,
        name: str,
        holder: str,
        concurrency: int | None,
        rate: Rate | None,
        lease: float,
    ) -> tuple[str, float] | None:
        """Decide and take a start in one ``BEGIN IMMEDIATE`` transaction: every process on
        the file waits for the write lock, so two never both take the last slot or room.
        Times are the machine's clock, read once the lock is held."""
        with self.db.atomic() as conn:
            now = time.time()
            if concurrency is not None:
                conn.execute(sql.DROP_EXPIRED_SLOTS, (name, now))
                if conn.execute(sql.COUNT_SLOTS, (name,)).fetchone()[0] >= concurrency:
                    return "concurrency", 0.0
            if rate is not None:
                conn.execute(sql.DROP_OLD_STARTS, (name, now - rate.per))
                count, oldest = conn.execute(sql.WINDOW, (name,)).fetchone()
                if count >= rate.count:
                    return "rate_limit", max(0.0, oldest + rate.per - now)
                conn.execute(sql.RECORD_START, (name, now, now + rate.per))
            if concurrency is not None:
                conn.execute(sql.TAKE_SLOT, (name, holder, now + lease))
        return None

    def renew_slots(self, held: list[tuple[str, str]], lease: float) -> None:
        with self.db.atomic() as conn:
            now = time.time()
            conn.executemany(sql.RENEW_SLOT, [(now + lease, n, h, now) for n, h in held])

    def release_slot(self, name: str, holder: str) -> None:
        self.db.write(sql.RELEASE_SLOT, (name, holder))

    # -- the end of a delivery, in one transaction ---------------------------------------
    def finish(self, end: Ending) -> None:
        with self.db.atomic() as conn:
            if end.deliveries is not None:
                conn.execute(sql.FORGET_DELIVERIES, end.deliveries)
            if end.release is not None:
                conn.execute(sql.RELEASE_KEY, end.release)
            if end.task_id is not None and end.outcome is not None:
                outcome = end.outcome.to_json()
                expires = time.time() + self.result_ttl
                conn.execute(sql.STORE_OUTCOME, (end.task_id, outcome, expires))

    # -- retention -----------------------------------------------------------------------
    def expire(self, batch: int = 1000) -> int:
        """Delete a batch of expired outcomes, keys, delivery counts, tombstones, worker
        records, concurrency leases and window starts; return how many."""
        now = time.time()
        gone = 0
        for statement in sql.EXPIRE:
            with self.db.atomic() as conn:
                gone += conn.execute(statement, (now, batch)).rowcount
        return gone

    def close(self) -> None:
        self.watcher.stop()
        self.db.close()
