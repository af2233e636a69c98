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
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence

from pacificpy.background import execution
from pacificpy.background.backend import BackgroundBackend
from pacificpy.background.backends.sqlite import sql
from pacificpy.background.backends.sqlite.db import Database, DatabaseError
from pacificpy.background.backends.sqlite.queue import Leased, SQLiteQueue
from pacificpy.background.backends.sqlite.state import SQLiteTaskState
from pacificpy.background.execution import Decision
from pacificpy.background.local import LocalExecutor
from pacificpy.background.task import Message, TaskEnvelope, TaskSpec
from pacificpy.background.workers import WorkerHealth
from pacificpy.errors import ConfigurationError, EnqueueError, PacificPyError
from pacificpy.types import TaskStatus

__all__ = ["SQLiteBackgroundBackend"]

logger = logging.getLogger("pacificpy.background")

#: Seconds between two retention passes (expired outcomes, keys, counts; vacuum).
RETENTION_EVERY = 60.0
#: Seconds between two looks for due rows when nothing says there may be one.
RESCAN_EVERY = 1.0
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
        poll_interval: seconds between looks at the file's change counter, which tells
            this process that another one committed (a new task, say): a cheap read, so
            tasks enqueued by other processes are picked up within about this long.
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
        poll_interval: float = 0.005,
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
        #: Slots that must be free before a saturated feeder leases again: one lease
        #: transaction then takes a batch, not one row per finished task.
        self._refill = max(1, self.prefetch // 2)
        self._full = False  # no slot to lease into: finished tasks wake the feeder

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

    def start(self) -> None:
        """Start this process's workers now: an app does it at startup, a script at its
        first enqueue; a script that only runs what is already in the file calls this.

        Raises:
            DatabaseError: the file cannot be used.
        """
        self.db.check()
        self._accepting = True
        self.consume = True
        self._ensure_started()

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
                self.queue.publish(message, delay)  # one statement: its own commit
            else:
                with self.db.atomic():
                    if not self.claim_key(env):
                        return  # an earlier task holds the key: enqueue nothing
                    self.queue.publish(message, delay)
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" not in str(exc):
                raise self.enqueue_error(message, exc) from exc
            raise EnqueueError(  # the task id's row exists
                f"a task with id {message.task_id} is already queued or running; task ids "
                "must be unique", cause=exc, task_id=message.task_id,
                task_name=message.task_name,
            ) from exc  # fmt: skip
        except PacificPyError as exc:
            if not isinstance(exc, DatabaseError):
                raise
            raise self.enqueue_error(message, exc) from exc
        except Exception as exc:
            raise self.enqueue_error(message, exc) from exc
        if self.consume and self._accepting:
            if not self._started or not self._feeding:
                self._ensure_started()
            self._wake(delay)

    def enqueue_where(self) -> str:
        return f"in the SQLite file {self.path}"

    def enqueue_error(self, message: Message, exc: BaseException) -> EnqueueError:
        """``EnqueueError`` naming the file and what the SQLite error means."""
        if isinstance(exc, DatabaseError):  # its text says it all already
            return EnqueueError(f"could not enqueue {message.task_name} {message.task_id}: "
                                f"{exc}", cause=exc, task_id=message.task_id,
                                task_name=message.task_name)  # fmt: skip
        return EnqueueError.of(message.task_name, message.task_id, exc,
                               where=self.enqueue_where(), hint=self.db.explain(exc))  # fmt: skip

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
        failures = 0
        saturated = False  # the last lease filled every free slot
        while self._feeding:
            leased = free = 0
            version: int | None = None
            due: float | None = None
            now = time.monotonic()
            try:
                if now >= beat:
                    self.queue.renew(self.lease)
                    self.queue.expire_leases()
                    beat = now + self.heartbeat
                if now >= retain:
                    self._retain()
                    retain = now + RETENTION_EVERY
                version = self.queue.version()  # read first: a commit after it is seen
                free = self._free_slots() if self._leasing else 0
                if saturated and free < self._refill:
                    free = 0  # lease a batch once enough slots are free, not row by row
                if free > 0:
                    got = self.queue.lease(free, self.queues, self.lease)
                    leased = len(got)
                    for message in got:
                        self._accept(message)
                    if leased < free:
                        due = self.queue.next_due(self.queues)
                failures = 0
            except Exception:
                logger.exception("SQLite backend: could not lease tasks from %s", self.path)
                failures += 1
            if leased and leased == free:
                saturated = True
                continue  # there may be more
            if leased < free:
                saturated = False  # nothing more is due
            self._full = self._leasing and free == 0  # a finished task wakes us
            until = now + (min(5.0, 0.1 * 2**failures) if failures else RESCAN_EVERY)
            if due is not None:  # a countdown or retry of any process
                until = min(until, max(now + due - time.time(), now + self.poll_interval))
            self._rest(min(until, beat), version)

    def _rest(self, until: float, version: int | None) -> None:
        """Wait until ``until``, or until woken (an enqueue or a free slot here), or until
        another connection commits to the file (looked at every ``poll_interval``)."""
        with self._feed:
            while not self._woken and not (self._full and self._free_slots() >= self._refill):
                now = time.monotonic()
                end = min(until, self._wake_at)
                if end <= now:
                    break
                self._feed.wait(min(self.poll_interval, end - now))
                if self._woken or self._full or version is None:
                    continue
                try:
                    if self.queue.version() != version:
                        break
                except Exception:
                    break
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
        if self._full and self._free_slots() >= self._refill:  # a batch of slots is free
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

    def _settle(self, decision: Decision, message: Message) -> bool:
        final = decision.kind not in execution.REPUBLISH  # not a retry or a held start
        if final:
            self._done(message)
        assert isinstance(message, Leased)
        retry_in: list[float] = []

        def reschedule(nxt: Message, delay: float) -> None:
            self.queue.reschedule(message, nxt, delay)
            retry_in.append(delay)

        def settle() -> None:  # one commit, shared with other threads' settles
            execution.settle(decision, message.data, self.state, reschedule,
                             signing_key=self.signing_key)  # fmt: skip
            if decision.kind not in execution.REPUBLISH:  # retry, or a start held back
                self.queue.ack(message)

        self.db.combined(settle)
        if retry_in:
            self._wake(retry_in[0])
        return final

    # -- worker processes ----------------------------------------------------------------
    def run_worker(
        self,
        *,
        module: str | None = None,
        workers: int = 1,
        queues: Sequence[str] | None = None,
        log_level: str = "info",
        health: WorkerHealth | None = None,
    ) -> int:
        """``pacificpy worker MODULE``: run ``workers`` processes consuming ``queues``
        (default: ``default``) from this backend's file, supervised; returns the exit code.
        ``health`` (``--health-port``) gets one check per process.

        Raises:
            ConfigurationError: no ``module`` to import in the worker processes.
            DatabaseError: the file cannot be used.
        """
        from pacificpy.background.backends.sqlite import worker

        if module is None:
            raise ConfigurationError("run_worker needs the module that configures the backend")
        return worker.supervise(
            self, module, workers=workers, queues=queues, log_level=log_level, health=health
        )

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
        due = self.db.one(sql.OLDEST_DUE, (time.time(), queue))
        with self._lock:
            ahead = next((m for m in self._queued.values() if m.queue == queue), None)
        if isinstance(ahead, Leased):
            mine = self.db.one(sql.RUN_AT_OF_TASK, (ahead.task_id,))
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
