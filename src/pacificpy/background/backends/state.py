"""Where a backend keeps what outlives one delivery: the :class:`TaskState` contract.

A backend is a transport (publish, consume, queue length) plus a ``TaskState``. The base
backend (:class:`~pacificpy.background.backend.BackgroundBackend`) writes dead-letter
list / requeue / purge, ``wait_result``, idempotency and the poison guard once, over this
contract; :func:`pacificpy.background.execution.settle` carries out every decision with
it. After Dramatiq's ``ResultBackend``: the base owns the algorithm, an implementation
supplies the storage.

The state holds:

- outcomes: the final :class:`~pacificpy.background.task.Outcome` of a task id;
- dead letters: what could not run or failed for good, newest first;
- idempotency keys: ``(task name, key)`` held by the first task that took it, for a TTL;
- delivery counts: how many times a worker began one attempt (the poison guard);
- flow control: each limited task's concurrency leases (a slot per running start,
  expiring unless renewed) and rate window (recent start times), see
  :mod:`pacificpy.background.flow`.
- tombstones: a cancelled task id, refused when its delivery arrives, for a TTL
  (:meth:`TaskState.cancel`, :meth:`TaskState.is_cancelled`).
- schedule slots: the last slot of each periodic task that some process enqueued
  (:mod:`pacificpy.background.schedules`).
- the worker registry: each worker's last heartbeat (:mod:`pacificpy.background.workers`).

Three implementations: :class:`MemoryTaskState` here (the local executor, eager and
capturing backends), :class:`~pacificpy.background.backends.redis.state.RedisTaskState`
(Celery and ARQ) and :class:`~pacificpy.background.backends.sqlite.state.SQLiteTaskState`
(SQLite). A state that lacks an optional part says so (``keeps_tombstones``,
``keeps_schedules``) or raises ``NotImplementedError``.
"""

from __future__ import annotations

import abc
import asyncio
import heapq
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from pacificpy.background._outcomes import OutcomeBoard
from pacificpy.background.dead_letter import DeadLetter, MemoryDeadLetterStore
from pacificpy.background.task import Outcome

if TYPE_CHECKING:
    from pacificpy.background.flow import Rate

__all__ = ["Ending", "MemoryTaskState", "TaskState", "poll_outcome", "poll_outcome_sync"]

_FIRST_PAUSE = 0.005
_MAX_PAUSE = 0.1


class Ending(NamedTuple):
    """What the end of one delivery writes to the state."""

    #: The task whose ``outcome`` is stored (nothing stored when either is None).
    task_id: str | None
    outcome: Outcome | None
    #: ``(task_id, attempt)`` whose delivery count is forgotten.
    deliveries: tuple[str, int] | None = None
    #: ``(task name, idempotency key)`` to release.
    release: tuple[str, str] | None = None


class TaskState(abc.ABC):
    """Outcomes, dead letters, idempotency keys and delivery counts of one backend.

    The sync methods are the contract. The async ones (``a``-prefixed) are what an event
    loop worker awaits; by default they call the sync form, which suits a state whose
    methods never block (in memory); a state doing network I/O overrides them.
    """

    # -- outcomes ------------------------------------------------------------------------
    @abc.abstractmethod
    def get_outcome(self, task_id: str) -> Outcome | None:
        """The final outcome of ``task_id``, or None if there is none (yet)."""

    @abc.abstractmethod
    def store_outcome(self, task_id: str, outcome: Outcome) -> None:
        """Keep ``outcome`` as the final outcome of ``task_id``."""

    @abc.abstractmethod
    def clear_outcome(self, task_id: str) -> None:
        """Forget the outcome of ``task_id`` (a requeued task starts afresh)."""

    def wait_outcome(self, task_id: str, timeout: float | None) -> Outcome:
        """Block until ``task_id`` has an outcome; by default by polling.

        Raises:
            TimeoutError: none within ``timeout`` seconds.
        """
        return poll_outcome_sync(lambda: self.get_outcome(task_id), task_id, timeout)

    async def await_outcome(self, task_id: str, timeout: float | None) -> Outcome:
        """Async form of :meth:`wait_outcome`."""
        return await poll_outcome(lambda: self.aget_outcome(task_id), task_id, timeout)

    async def aget_outcome(self, task_id: str) -> Outcome | None:
        return self.get_outcome(task_id)

    # -- dead letters --------------------------------------------------------------------
    @abc.abstractmethod
    def add_dead_letter(self, letter: DeadLetter) -> None:
        """Keep ``letter`` (the oldest go once the store is full)."""

    @abc.abstractmethod
    def list_dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The newest ``limit`` dead letters, newest first."""

    @abc.abstractmethod
    def get_dead_letter(self, letter_id: str) -> DeadLetter | None:
        """The letter with that id, left in place."""

    @abc.abstractmethod
    def pop_dead_letter(self, letter_id: str) -> DeadLetter | None:
        """Take the letter with that id out; None if it is not there (any more)."""

    @abc.abstractmethod
    def clear_dead_letters(self) -> int:
        """Delete every dead letter; return how many there were."""

    async def aadd_dead_letter(self, letter: DeadLetter) -> None:
        self.add_dead_letter(letter)

    # -- idempotency keys ----------------------------------------------------------------
    @abc.abstractmethod
    def claim(self, name: str, key: str, task_id: str, ttl: float) -> bool:
        """Take task ``name``'s idempotency ``key`` for ``task_id`` for ``ttl`` seconds.

        Returns False when an earlier task holds it.
        """

    @abc.abstractmethod
    def release(self, name: str, key: str) -> None:
        """Free the key (the task failed for good: a new call may run it again)."""

    # -- delivery counts (the poison guard) ----------------------------------------------
    @abc.abstractmethod
    def count_delivery(self, task_id: str, attempt: int) -> int:
        """Count one more start of ``task_id``'s ``attempt``; return the count."""

    @abc.abstractmethod
    def forget_deliveries(self, task_id: str, attempt: int) -> None:
        """The attempt ended: drop its count."""

    # -- tombstones (cancellation) -------------------------------------------------------
    #: False for a state that keeps no tombstones: its tasks cannot be cancelled.
    keeps_tombstones: bool = False

    def cancel(self, task_id: str, outcome: Outcome, ttl: float) -> bool:
        """Lay a tombstone for ``task_id`` for ``ttl`` seconds and store ``outcome`` (its
        ``cancelled`` outcome), unless it already has an outcome; then tell every process
        running tasks of this state (:func:`pacificpy.background.cancellation.deliver`),
        promptly, not at its next poll.

        Returns:
            True if the tombstone was laid; False if the task had finished (nothing
            changed).
        """
        raise NotImplementedError(f"{type(self).__name__} keeps no tombstones")

    def is_cancelled(self, task_id: str) -> bool:
        """True while ``task_id`` has a tombstone. Asked when every delivery arrives, before
        the task runs: a state answers from memory (no I/O per task)."""
        return False

    # -- schedule slots (periodic tasks) ---------------------------------------------------
    #: False for a state that does not keep schedule slots: no scheduler runs on it.
    keeps_schedules: bool = False

    def last_schedule_slot(self, name: str) -> float | None:
        """The last slot (a Unix time) of task ``name``'s schedule that was enqueued, or
        None if it never was (or the state does not keep slots)."""
        return None

    def advance_schedule_slot(self, name: str, slot: float, expected: float | None) -> bool:
        """Record ``slot`` as task ``name``'s last enqueued slot if the recorded one is still
        ``expected`` (None: none is recorded) and ``slot`` is later: a compare-and-set,
        atomic across every process sharing the state.

        Returns True for the one caller that advanced it: that caller enqueues the slots
        after ``expected`` up to ``slot``.
        """
        raise NotImplementedError(f"{type(self).__name__} keeps no schedule slots")

    # -- the worker registry (pacificpy.background.workers) -------------------------------
    #: False for a state that keeps no worker registry (the defaults below keep nothing).
    keeps_workers: bool = False

    def put_worker(  # noqa: B027 - optional: a state may keep no registry
        self, worker_id: str, record: dict[str, Any], ttl: float
    ) -> None:
        """Keep ``record`` (a worker's heartbeat, JSON-able) under ``worker_id`` for ``ttl``
        seconds, replacing the previous one. The default keeps nothing."""

    def remove_worker(self, worker_id: str) -> None:  # noqa: B027 - optional, as put_worker
        """Forget ``worker_id`` (it stopped cleanly). The default keeps nothing."""

    def list_worker_records(self) -> list[dict[str, Any]]:
        """Every worker record whose TTL has not run out, in no particular order."""
        return []

    async def aput_worker(self, worker_id: str, record: dict[str, Any], ttl: float) -> None:
        self.put_worker(worker_id, record, ttl)

    async def aremove_worker(self, worker_id: str) -> None:
        self.remove_worker(worker_id)

    def ping(self) -> None:  # noqa: B027 - a state in this process always answers
        """One round trip to where the state lives; raises if it does not answer."""

    # -- the end of a delivery -----------------------------------------------------------
    def finish(self, end: Ending) -> None:
        """Everything a delivery writes when it ends (a state may do it in one round trip):
        forget the delivery count, release the key, then store the outcome, so whoever
        waits for the outcome finds the key free."""
        if end.deliveries is not None:
            self.forget_deliveries(*end.deliveries)
        if end.release is not None:
            self.release(*end.release)
        if end.task_id is not None and end.outcome is not None:
            self.store_outcome(end.task_id, end.outcome)

    async def afinish(self, end: Ending) -> None:
        self.finish(end)

    # -- flow control (concurrency leases, rate windows) ---------------------------------
    def admit(
        self,
        name: str,
        holder: str,
        concurrency: int | None,
        rate: Rate | None,
        lease: float,
    ) -> tuple[str, float] | None:
        """Take one start of task ``name`` for ``holder`` if its limits allow, atomically.

        With ``concurrency``, a slot is taken while fewer than that many unexpired leases
        are held, as a lease of ``lease`` seconds (renewed by :meth:`renew_slots`, given
        back by :meth:`release_slot`). With ``rate``, the start is recorded while fewer
        than ``rate.count`` starts fall in the last ``rate.per`` seconds. Either both are
        taken or neither.

        Returns None when admitted; else ``(limit, seconds)``: the limit that refused
        (``"concurrency"`` or ``"rate_limit"``) and how soon it may allow a start (0 when
        unknown). By default the state keeps no limits and says so.
        """
        raise NotImplementedError(
            f"{type(self).__name__} keeps no concurrency leases or rate windows: tasks with "
            "concurrency= or rate_limit= cannot run on this backend"
        )

    async def aadmit(
        self,
        name: str,
        holder: str,
        concurrency: int | None,
        rate: Rate | None,
        lease: float,
    ) -> tuple[str, float] | None:
        return self.admit(name, holder, concurrency, rate, lease)

    def renew_slots(self, held: list[tuple[str, str]], lease: float) -> None:
        """Extend the leases ``(task name, holder)`` to ``lease`` seconds from now (a lease
        already expired stays gone)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no concurrency leases")

    def release_slot(self, name: str, holder: str) -> None:
        """Give back ``holder``'s slot of task ``name`` (nothing if it expired)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no concurrency leases")

    async def arelease_slot(self, name: str, holder: str) -> None:
        self.release_slot(name, holder)

    # -- resources -----------------------------------------------------------------------
    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the state may be used again after (it reconnects)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release the running loop's connections."""


class MemoryTaskState(TaskState):
    """A :class:`TaskState` in this process (the in-process backends).

    Args:
        clock: monotonic clock of idempotency-key expiry.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.outcomes = OutcomeBoard()
        self.letters = MemoryDeadLetterStore()
        self.keys: dict[tuple[str, str], float] = {}  # (task name, key) -> expiry
        self.key_expiry: list[tuple[float, tuple[str, str]]] = []  # heap by expiry
        self._keys_lock = threading.Lock()
        self._deliveries: dict[tuple[str, int], int] = {}
        self._workers: dict[str, tuple[float, dict[str, Any]]] = {}  # id -> (expiry, record)
        self._flow_lock = threading.Lock()
        self._slots: dict[str, dict[str, float]] = {}  # task name -> holder -> lease expiry
        self._starts: dict[str, deque[float]] = {}  # task name -> start times, oldest first
        self.tombstones: dict[str, float] = {}  # task id -> expiry (clock)
        self._schedule_slots: dict[str, float] = {}  # schedule name -> last enqueued slot

    keeps_tombstones = True

    def cancel(self, task_id: str, outcome: Outcome, ttl: float) -> bool:
        from pacificpy.background import cancellation

        with self._keys_lock:
            if self.outcomes.get(task_id) is not None:
                return False
            now = self._clock()
            if len(self.tombstones) > 1024:
                self.tombstones = {k: e for k, e in self.tombstones.items() if e > now}
            self.tombstones[task_id] = now + ttl
            self.outcomes.post(task_id, outcome)
        cancellation.deliver(task_id)
        return True

    def is_cancelled(self, task_id: str) -> bool:
        expires = self.tombstones.get(task_id)
        return expires is not None and expires > self._clock()

    def get_outcome(self, task_id: str) -> Outcome | None:
        return self.outcomes.get(task_id)

    def store_outcome(self, task_id: str, outcome: Outcome) -> None:
        self.outcomes.post(task_id, outcome)

    def clear_outcome(self, task_id: str) -> None:
        self.outcomes.clear(task_id)

    def wait_outcome(self, task_id: str, timeout: float | None) -> Outcome:
        return self.outcomes.wait_sync(task_id, timeout)

    async def await_outcome(self, task_id: str, timeout: float | None) -> Outcome:
        return await self.outcomes.wait(task_id, timeout)

    def add_dead_letter(self, letter: DeadLetter) -> None:
        self.letters.add(letter)

    def list_dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return self.letters.list(limit)

    def get_dead_letter(self, letter_id: str) -> DeadLetter | None:
        return self.letters.get(letter_id)

    def pop_dead_letter(self, letter_id: str) -> DeadLetter | None:
        return self.letters.pop(letter_id)

    def clear_dead_letters(self) -> int:
        return self.letters.purge()

    def claim(self, name: str, key: str, task_id: str, ttl: float) -> bool:
        pair = (name, key)
        now = self._clock()
        with self._keys_lock:
            expires = self.keys.get(pair)
            if expires is not None and expires > now:
                return False
            self._prune_keys(now)
            expires = now + ttl
            self.keys[pair] = expires
            heapq.heappush(self.key_expiry, (expires, pair))
        return True

    def _prune_keys(self, now: float) -> None:
        """Forget keys whose TTL has passed (amortised: each key is pushed and popped once).

        The heap may hold stale entries (a key released early, or taken again); when they
        outnumber the live keys it is rebuilt, so its size stays within twice theirs.
        """
        heap, keys = self.key_expiry, self.keys
        while heap and heap[0][0] <= now:
            expires, pair = heapq.heappop(heap)
            if keys.get(pair) == expires:
                del keys[pair]
        if len(heap) > 2 * len(keys) + 64:
            self.key_expiry = [(e, k) for k, e in keys.items()]
            heapq.heapify(self.key_expiry)

    def release(self, name: str, key: str) -> None:
        with self._keys_lock:
            self.keys.pop((name, key), None)

    def count_delivery(self, task_id: str, attempt: int) -> int:
        with self._keys_lock:
            n = self._deliveries[(task_id, attempt)] = (
                self._deliveries.get((task_id, attempt), 0) + 1
            )
        return n

    def forget_deliveries(self, task_id: str, attempt: int) -> None:
        with self._keys_lock:
            self._deliveries.pop((task_id, attempt), None)

    # -- flow control ----------------------------------------------------------------------
    def admit(
        self,
        name: str,
        holder: str,
        concurrency: int | None,
        rate: Rate | None,
        lease: float,
    ) -> tuple[str, float] | None:
        now = self._clock()
        with self._flow_lock:
            slots = self._slots.get(name)
            if concurrency is not None:
                if slots is None:
                    slots = self._slots[name] = {}
                for gone in [h for h, expiry in slots.items() if expiry <= now]:
                    del slots[gone]
                if len(slots) >= concurrency:
                    return "concurrency", 0.0
            if rate is not None:
                starts = self._starts.get(name)
                if starts is None:
                    starts = self._starts[name] = deque()
                while starts and starts[0] <= now - rate.per:
                    starts.popleft()
                if len(starts) >= rate.count:
                    return "rate_limit", starts[0] + rate.per - now
                starts.append(now)
            if slots is not None and concurrency is not None:
                slots[holder] = now + lease
        return None

    def renew_slots(self, held: list[tuple[str, str]], lease: float) -> None:
        expiry = self._clock() + lease
        with self._flow_lock:
            for name, holder in held:
                slots = self._slots.get(name)
                if slots is not None and holder in slots:
                    slots[holder] = expiry

    def release_slot(self, name: str, holder: str) -> None:
        with self._flow_lock:
            slots = self._slots.get(name)
            if slots is not None:
                slots.pop(holder, None)

    keeps_schedules = True

    def last_schedule_slot(self, name: str) -> float | None:
        return self._schedule_slots.get(name)

    def advance_schedule_slot(self, name: str, slot: float, expected: float | None) -> bool:
        with self._keys_lock:
            last = self._schedule_slots.get(name)
            if last != expected or (last is not None and last >= slot):
                return False
            self._schedule_slots[name] = slot
        return True

    keeps_workers = True

    def put_worker(self, worker_id: str, record: dict[str, Any], ttl: float) -> None:
        with self._keys_lock:
            self._workers[worker_id] = (time.monotonic() + ttl, dict(record))

    def remove_worker(self, worker_id: str) -> None:
        with self._keys_lock:
            self._workers.pop(worker_id, None)

    def list_worker_records(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        with self._keys_lock:
            for wid in [w for w, (expiry, _) in self._workers.items() if expiry <= now]:
                del self._workers[wid]
            return [dict(record) for _, record in self._workers.values()]


# -- polling a state that cannot notify ------------------------------------------------------
def _next_wait(pause: float, deadline: float | None, task_id: str, timeout: float | None) -> float:
    """How long to sleep before the next look; TimeoutError once ``deadline`` has passed."""
    if deadline is None:
        return pause
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"task {task_id} did not finish within {timeout}s")
    return min(pause, left)


async def poll_outcome(
    fetch: Callable[[], Awaitable[Outcome | None]], task_id: str, timeout: float | None
) -> Outcome:
    """Await ``fetch()`` until it gives an outcome: every 5 ms at first, backing off to 100 ms.

    Raises:
        TimeoutError: none within ``timeout`` seconds (None: wait for ever).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = _FIRST_PAUSE
    while True:
        outcome = await fetch()
        if outcome is not None:
            return outcome
        await asyncio.sleep(_next_wait(pause, deadline, task_id, timeout))
        pause = min(pause * 1.5, _MAX_PAUSE)


def poll_outcome_sync(
    fetch: Callable[[], Outcome | None], task_id: str, timeout: float | None
) -> Outcome:
    """Blocking form of :func:`poll_outcome`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = _FIRST_PAUSE
    while True:
        outcome = fetch()
        if outcome is not None:
            return outcome
        time.sleep(_next_wait(pause, deadline, task_id, timeout))
        pause = min(pause * 1.5, _MAX_PAUSE)
