"""``SQLiteBackgroundBackend``: durable tasks in one SQLite file, no server.

The running machinery is the local executor's (sync tasks on its thread pool, async ones
on the serving loop or its own loop thread, timeouts, stuck-thread replacement); what
changes is where a message waits. ``.delay()`` commits a row before it returns; a feeder
thread leases due rows (woken at once by an enqueue in this process, polling every
``poll_interval`` for other processes' rows and for countdowns) and hands them to the
pool; the end of a run settles the decision and deletes the row (or turns it into the
next attempt) in one transaction. A heartbeat renews the leases this process holds; a
lease that expires (its process died) puts its row back for another delivery, and past
``max_deliveries`` the poison guard dead-letters it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence

from pacificpy.background import execution
from pacificpy.background.backend import BackgroundBackend
from pacificpy.background.backends.sqlite import sql
from pacificpy.background.backends.sqlite.db import Database
from pacificpy.background.backends.sqlite.queue import Leased, SQLiteQueue
from pacificpy.background.backends.sqlite.state import SQLiteTaskState
from pacificpy.background.execution import Decision
from pacificpy.background.local import LocalExecutor
from pacificpy.background.task import Message, TaskEnvelope, TaskSpec
from pacificpy.errors import PacificPyError
from pacificpy.types import TaskStatus

__all__ = ["SQLiteBackgroundBackend"]

logger = logging.getLogger("pacificpy.background")

#: Seconds between two retention passes (expired outcomes, keys, counts; vacuum).
RETENTION_EVERY = 60.0
#: Free pages past which a retention pass gives space back to the file system.
VACUUM_PAGES = 1024


class SQLiteBackgroundBackend(LocalExecutor):
    """Durable, at-least-once tasks in one SQLite file.

    Args:
        path: the database file (created if missing; its directory must exist).
        max_workers: worker threads for sync tasks, and async tasks run at once, in this
            process (default: ``min(32, CPUs + 4)``).
        consume: run the tasks in this process (default). False: this process only
            enqueues, and ``pacificpy worker MODULE`` processes run them.
        queues: the queues this process consumes (None: every queue).
        lease: seconds a delivery is leased; its holder renews it every ``heartbeat``
            seconds while the task runs. A lease that runs out (its process died) makes
            the task run again.
        heartbeat: seconds between renewals (default: a third of ``lease``).
        poll_interval: seconds between looks for rows other processes enqueued.
        prefetch: rows leased ahead of free workers (default: ``max_workers``).
        result_ttl: seconds outcomes are kept.
        max_deliveries: deliveries of one attempt before it is dead-lettered as poison.
        busy_timeout: seconds a statement waits for another process's write lock.
        shutdown_timeout: seconds shutdown waits for running tasks (the rest stay in the
            file and run later).
        allow_pickle: accept ``serializer="pickle"`` tasks.
    """

    kind = "sqlite"
    primary = "sync"
    blocking = True

    def __init__(
        self,
        path: str | os.PathLike[str] = "pacificpy-tasks.db",
        max_workers: int | None = None,
        *,
        consume: bool = True,
        queues: Sequence[str] | None = None,
        lease: float = 30.0,
        heartbeat: float | None = None,
        poll_interval: float = 0.05,
        prefetch: int | None = None,
        result_ttl: float = 86_400.0,
        max_deliveries: int = 5,
        busy_timeout: float = 5.0,
        shutdown_timeout: float = 30.0,
        allow_pickle: bool = False,
    ) -> None:
        super().__init__(max_workers, shutdown_timeout=shutdown_timeout, allow_pickle=allow_pickle)
        if lease <= 0 or poll_interval <= 0:
            raise ValueError("lease and poll_interval must be positive")
        if heartbeat is not None and not 0 < heartbeat < lease:
            raise ValueError("heartbeat must be positive and shorter than lease")
        if isinstance(queues, str):
            raise TypeError("queues is a list of queue names, not a string")
        self.max_deliveries = max_deliveries
        self.consume = consume
        self.queues = tuple(queues) if queues is not None else None
        self.lease = lease
        self.heartbeat = heartbeat if heartbeat is not None else lease / 3
        self.poll_interval = poll_interval
        self.prefetch = self.max_workers if prefetch is None else prefetch
        self.db = Database(path, busy_timeout=busy_timeout)
        self._sql_state = SQLiteTaskState(self.db, result_ttl=result_ttl)
        self.queue = SQLiteQueue(self.db, owner="")
        self._feed = threading.Condition(threading.Lock())
        self._woken = False
        self._feeder: threading.Thread | None = None
        self._feeding = False  # the feeder thread runs (heartbeats included)
        self._leasing = False  # ... and leases new rows
        self._wake_at = float("inf")
        self._full = False  # the last lease filled every free slot

    def __repr__(self) -> str:
        return f"<SQLiteBackgroundBackend {self.db.path!r} max_workers={self.max_workers}>"

    @property
    def path(self) -> str:
        """The database file."""
        return self.db.path

    @property
    def state(self) -> SQLiteTaskState:  # type: ignore[override]
        """Outcomes, dead letters, idempotency keys and delivery counts, in the file."""
        return self._sql_state

    # -- lifecycle -----------------------------------------------------------------------
    async def startup(self) -> None:
        """Check the file (a clear error now if it cannot be used), then start consuming.

        Raises:
            DatabaseError: the file is not a SQLite database, cannot be written, or stays
                locked.
        """
        self.db.check()
        await super().startup()

    def _ensure_started(self) -> None:
        super()._ensure_started()
        if self.consume and not self._feeding:
            self._start_feeder()

    def _start_feeder(self) -> None:
        with self._feed:
            if self._feeding:
                return
            self.queue.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
            self._feeding = self._leasing = True
            self._feeder = threading.Thread(
                target=self._feed_loop, name="pacificpy-sqlite-feeder", daemon=True
            )
            self._feeder.start()

    async def shutdown(self) -> None:
        """Stop leasing; wait up to ``shutdown_timeout`` for running tasks; hand back the
        rest (they stay in the file for another process, or the next start)."""
        self._stop_leasing()
        await super().shutdown()

    def shutdown_sync(self, timeout: float | None = None) -> None:
        """Blocking :meth:`shutdown`."""
        self._stop_leasing()
        super().shutdown_sync(timeout)

    def _stop_leasing(self) -> None:
        with self._feed:
            self._leasing = False
            self._feed.notify()

    def _finish_shutdown(self) -> None:
        with self._feed:
            self._feeding = self._leasing = False
            self._feed.notify()
            feeder, self._feeder = self._feeder, None
        if feeder is not None and feeder is not threading.current_thread():
            feeder.join(timeout=10)
        if self.queue.owner:
            try:
                self.queue.give_back_all()
            except Exception:
                logger.exception("could not hand back the leased tasks of %s", self.path)
        super()._finish_shutdown()
        self.db.close()

    def _leftovers(self, leftovers: list[tuple[str, str]]) -> None:
        """Tasks not finished at shutdown stay in the file: they run again later."""
        for task_id, name in leftovers:
            logger.warning(
                "task %s %s did not finish before shutdown; it stays in %s and runs again "
                "(here after a restart, or in another worker process)",
                name, task_id, self.path,
            )  # fmt: skip

    def join(self, timeout: float | None = None) -> bool:
        """Block until the file holds no task and this process runs none (countdowns and
        retry waits included). Returns False if ``timeout`` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.queue.pending() == 0 and self._wait_idle(0):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    # -- producing -----------------------------------------------------------------------
    def _put(self, message: Message, delay: float | None, *, enforce_limit: bool) -> None:
        """Commit ``message``'s row (claiming its idempotency key in the same transaction),
        then wake this process's feeder.

        Raises:
            EnqueueError: the file could not take it (with the SQLite error as cause).
        """
        env = message.envelope
        try:
            if self.key_to_claim(env) is None:
                self.queue.publish(message, delay)
            else:
                with self.db.atomic():
                    if not self.claim_key(env):
                        return
                    self.queue.publish(message, delay)
        except PacificPyError:
            raise
        except Exception as exc:
            raise self.enqueue_error(message, exc) from exc
        if self.consume and self._accepting:
            if not self._started or not self._feeding:
                self._ensure_started()
            self._wake(delay)

    def enqueue_where(self) -> str:
        return f"in the SQLite file {self.path}"

    _resubmit = BackgroundBackend._resubmit

    def _wake(self, delay: float | None = None) -> None:
        """Tell the feeder a row is due now (or after ``delay`` seconds)."""
        if not delay or delay <= 0:
            if not self._woken:
                with self._feed:
                    self._woken = True
                    self._feed.notify()
            return
        at = time.monotonic() + delay
        with self._feed:
            if at < self._wake_at:
                self._wake_at = at
                self._feed.notify()

    # -- consuming -----------------------------------------------------------------------
    def _feed_loop(self) -> None:
        beat = retain = time.monotonic()
        pause = self.poll_interval
        while self._feeding:
            leased = 0
            try:
                now = time.monotonic()
                if now >= beat:
                    self.queue.renew(self.lease)
                    self.queue.expire_leases()
                    beat = now + self.heartbeat
                if now >= retain:
                    self._retain()
                    retain = now + RETENTION_EVERY
                free = self._free_slots() if self._leasing else 0
                if free > 0:
                    got = self.queue.lease(free, self.queues, self.lease)
                    leased = len(got)
                    for message in got:
                        self._accept(message)
                pause = self.poll_interval
            except Exception:
                logger.exception("SQLite backend: could not lease tasks from %s", self.path)
                pause = min(pause * 2, 5.0)
            self._full = leased > 0 and leased == free
            if self._full:
                continue  # there may be more: wait only for a free slot
            self._sleep(pause, beat)

    def _sleep(self, pause: float, beat: float) -> None:
        with self._feed:
            if not self._woken:
                now = time.monotonic()
                until = min(now + pause, beat, self._wake_at)
                if until > now:
                    self._feed.wait(until - now)
            self._woken = False
            if self._wake_at <= time.monotonic():
                self._wake_at = float("inf")

    def _free_slots(self) -> int:
        with self._lock:
            busy = len(self._queued) + len(self._running)
        return self.max_workers + self.prefetch - busy

    def _accept(self, message: Leased) -> None:
        with self._lock:
            self._queued[message.task_id] = message
            q = message.queue
            self._waiting[q] = self._waiting.get(q, 0) + 1
            self._waiting_total += 1
        self._dispatch(message)

    def _done(self, message: Message) -> None:
        super()._done(message)
        if self._full:  # the feeder waits for a free slot: lease more
            self._wake()

    def _retain(self) -> None:
        """Delete expired outcomes, keys and counts; give free pages back when many."""
        while self.state.expire() >= 1000:
            pass
        if (self.db.one(sql.FREELIST) or 0) > VACUUM_PAGES:
            self.db.write(sql.INCREMENTAL_VACUUM.format(pages=VACUUM_PAGES))

    # -- running -------------------------------------------------------------------------
    def _prepared(self, message: Message) -> tuple[TaskEnvelope, TaskSpec] | None:  # type: ignore[override]
        """A leased row is decoded by the execution path; past ``max_deliveries`` the
        poison guard's dead-letter decision comes back instead (both run paths settle a
        decision returned here)."""
        if isinstance(message, Leased) and message.deliveries > self.max_deliveries:
            prep = execution.prepare(message.data, self)
            if not isinstance(prep, Decision):
                prep = (
                    self.poison_guard(message.data, prep[0], deliveries=message.deliveries) or prep
                )
            return prep  # type: ignore[return-value]
        return None

    def _settle(self, decision: Decision, message: Message) -> None:
        if decision.kind != "retry":
            self._done(message)
        assert isinstance(message, Leased)
        retry_in: list[float] = []

        def reschedule(nxt: Message, delay: float) -> None:
            self.queue.reschedule(message, nxt, delay)
            retry_in.append(delay)

        with self.db.atomic():
            execution.settle(decision, message.data, self.state, reschedule,
                             signing_key=self.signing_key)  # fmt: skip
            if decision.kind != "retry":
                self.queue.ack(message)
        if retry_in:
            self._wake(retry_in[0])

    # -- reading -------------------------------------------------------------------------
    def get_status_sync(self, task_id: str) -> TaskStatus | None:
        """The stored outcome's status; else running (leased) or queued (a row waits);
        else what the monitor recorded."""
        outcome = self.state.get_outcome(task_id)
        if outcome is not None:
            return outcome.status
        found, holder = self.queue.holder(task_id)
        if found:
            return TaskStatus.RUNNING if holder else TaskStatus.QUEUED
        return BackgroundBackend.get_status_sync(self, task_id)

    def queue_length_sync(self, queue: str = "default") -> int:
        """Rows of ``queue`` waiting (due, or waiting out a countdown or a retry)."""
        return self.queue.length(queue)

    def oldest_waiting_sync(self, queue: str = "default") -> float | None:
        """When the oldest due row of ``queue`` that waits became due: rows no process
        holds, and rows this process leased ahead but has not started (its prefetch;
        another process's prefetch is not seen)."""
        due = self.db.one(sql.OLDEST_DUE, (queue, time.time()))
        with self._lock:
            ahead = next((m for m in self._queued.values() if m.queue == queue), None)
        if isinstance(ahead, Leased):
            mine = self.db.one(sql.RUN_AT_OF_ROW, (ahead.row,))
            if mine is not None and (due is None or mine < due):
                due = mine
        return None if due is None else float(due)

    def _registry_queues(self) -> list[str] | None:
        """A process that only enqueues (``consume=False``) runs no worker to register."""
        if not self.consume:
            return None
        return list(self.queues) if self.queues is not None else ["*"]

    def queued_hint(self, task_id: str) -> str:
        if self.consume:
            return (
                f"the SQLite backend runs {'every queue' if self.queues is None else 'its queues'}"
                " in this process, so it waits out a countdown or eta, or for a free worker "
                f"(all {self.max_workers} busy?)"
            )
        return BackgroundBackend.queued_hint(self, task_id)
