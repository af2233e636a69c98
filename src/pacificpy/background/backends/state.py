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
- the worker registry: each worker's last heartbeat (:mod:`pacificpy.background.workers`).

Room is kept for tombstones (a cancelled id, refused when it arrives) and leases (a
running task's claim, renewed while it runs): they will be methods of this class, with a
default that says the state does not keep them.

Two implementations: :class:`MemoryTaskState` here (the local executor, eager and
capturing backends) and :class:`~pacificpy.background.backends.redis.state.RedisTaskState`
(Celery and ARQ).
"""

from __future__ import annotations

import abc
import asyncio
import heapq
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from pacificpy.background._outcomes import OutcomeBoard
from pacificpy.background.dead_letter import DeadLetter, MemoryDeadLetterStore
from pacificpy.background.task import Outcome

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
