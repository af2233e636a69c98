"""The SQLite queue: the transport half of the backend (publish, lease, ack, length).

A message is one row of ``pacificpy_tasks``, keyed by its task id (a second message with
the id of a waiting or running one is refused). Publishing inserts it (due at ``run_at``);
a consumer leases due rows in one ``BEGIN IMMEDIATE`` (so two processes never lease the
same row), counting a delivery each time: rows with a higher priority first, then the
earliest due; the end of a run deletes the row (ack) or turns
it into the next attempt (a retry waits as a row, holding no worker). A lease is renewed
by its holder's heartbeat; a lease nobody renewed expires and the row waits again.
"""

from __future__ import annotations

import dataclasses
import time

from pacificpy.background.backends.sqlite import sql
from pacificpy.background.backends.sqlite.db import Database
from pacificpy.background.task import Message, TaskEnvelope

__all__ = ["Leased", "SQLiteQueue"]


@dataclasses.dataclass(frozen=True, slots=True)
class Leased(Message):
    """A message leased from its row, with ``deliveries`` for the poison guard."""

    deliveries: int = 0


class SQLiteQueue:
    """Rows of ``pacificpy_tasks`` in ``db``, leased by ``owner`` (one per consumer)."""

    def __init__(self, db: Database, owner: str) -> None:
        self.db = db
        self.owner = owner

    def publish(self, message: Message, delay: float | None = None) -> None:
        """Insert ``message``, due now or after ``delay`` seconds."""
        env = message.envelope
        run_at = time.time() + (delay if delay and delay > 0 else 0.0)
        row = (env.task_id, env.task_name, env.queue, env.attempt, message.data, run_at)
        self.db.write(sql.PUBLISH, (*row, env.priority))

    def lease(self, limit: int, queues: tuple[str, ...] | None, lease: float) -> list[Leased]:
        """Lease up to ``limit`` due rows (of ``queues``, or of any queue) for ``lease`` s."""
        now = time.time()
        if queues is None:
            due = self.db.one(sql.ANY_DUE, (now,))
        else:
            due = self.db.one(sql.ANY_DUE_IN.format(queues=", ".join("?" * len(queues))),
                              (*queues, now))  # fmt: skip
        if due is None:  # look without taking the write lock: idle polls stay cheap
            return []
        with self.db.atomic() as conn:
            # Rows with a priority first (highest, then oldest due), then the rest by due
            # time: two indexed reads, the first of an index holding only prioritized rows.
            if queues is None:
                ids = [r[0] for r in conn.execute(sql.PRIORITIZED_ANY, (now, limit))]
                if len(ids) < limit:
                    more = conn.execute(sql.READY_ANY, (now, limit - len(ids)))
                    ids += [r[0] for r in more]
            else:
                marks = ", ".join("?" * len(queues))
                statement = sql.PRIORITIZED_IN.format(queues=marks)
                ids = [r[0] for r in conn.execute(statement, (*queues, now, limit))]
                if len(ids) < limit:
                    statement = sql.READY_IN.format(queues=marks)
                    more = conn.execute(statement, (*queues, now, limit - len(ids)))
                    ids += [r[0] for r in more]
            if not ids:
                return []
            statement = sql.LEASE.format(ids=", ".join("?" * len(ids)))
            rows = conn.execute(statement, (self.owner, now + lease, *ids)).fetchall()
        order = {task_id: i for i, task_id in enumerate(ids)}  # in the order selected
        rows.sort(key=lambda r: order[r[0]])
        return [
            Leased(
                TaskEnvelope(
                    task_id=task_id, task_name=name, queue=queue, attempt=attempt, priority=prio
                ),
                bytes(data),
                deliveries=deliveries,
            )
            for task_id, name, queue, attempt, data, deliveries, prio in rows
        ]

    def ack(self, leased: Leased) -> None:
        """The run ended for good: delete the row (if this consumer still holds it)."""
        self.db.write(sql.ACK, (leased.task_id, self.owner))

    def reschedule(self, leased: Leased, message: Message, delay: float) -> None:
        """The run asked for a retry: the row becomes ``message``, due after ``delay`` s."""
        run_at = time.time() + max(delay, 0.0)
        params = (message.envelope.attempt, message.data, run_at, leased.task_id, self.owner)
        self.db.write(sql.RESCHEDULE, params)

    def give_back(self, leased: Leased) -> None:
        """Return a leased row that never started (its delivery is not counted)."""
        self.db.write(sql.UNLEASE_UNSTARTED, (leased.task_id, self.owner))

    def give_back_all(self) -> None:
        """Return every row this consumer holds (shutdown: another may run them now)."""
        self.db.write(sql.UNLEASE_ALL, (self.owner,))

    def renew(self, lease: float) -> None:
        """Heartbeat: extend every lease this consumer holds by ``lease`` seconds."""
        self.db.write(sql.RENEW, (time.time() + lease, self.owner))

    def expire_leases(self) -> int:
        """Put back the rows whose lease passed (their holder died); return how many."""
        return self.db.write(sql.EXPIRE_LEASES, (time.time(),)).rowcount

    def length(self, queue: str) -> int:
        """Rows of ``queue`` waiting (due or delayed), not counting leased ones."""
        return int(self.db.one(sql.QUEUE_LENGTH, (queue,)))

    def pending(self) -> int:
        """Every row: waiting, delayed or leased."""
        return int(self.db.one(sql.PENDING))

    def next_due(self, queues: tuple[str, ...] | None) -> float | None:
        """When the earliest waiting row (of ``queues``, or any) is due (Unix time)."""
        if queues is None:
            due = self.db.one(sql.NEXT_DUE)
        else:
            statement = sql.NEXT_DUE_IN.format(queues=", ".join("?" * len(queues)))
            due = self.db.one(statement, queues)
        return None if due is None else float(due)

    def version(self) -> int:
        """A number that changes when another connection commits to the file."""
        return int(self.db.one(sql.DATA_VERSION))

    def holder(self, task_id: str) -> tuple[bool, str | None]:
        """``(has a row, its lease holder)`` of ``task_id``."""
        row = self.db.execute(sql.ROW_OF_TASK, (task_id,)).fetchone()
        return (False, None) if row is None else (True, row[0])
