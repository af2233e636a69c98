"""In-process outcome board: where in-memory backends keep final outcomes for waiters."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import dataclasses
import threading
from collections import OrderedDict
from typing import Any

from pacificpy.background.monitor.previews import approx_size, cap_error, cap_traceback
from pacificpy.background.task import Outcome
from pacificpy.errors import BackgroundError
from pacificpy.types import TaskStatus

__all__ = ["OUTCOME_BYTES", "EvictedOutcome", "OutcomeBoard"]

#: Default byte budget of the values and tracebacks an :class:`OutcomeBoard` keeps.
OUTCOME_BYTES = 64 * 1024 * 1024


@dataclasses.dataclass
class EvictedOutcome(Outcome):
    """What is left of an outcome the board's byte budget pushed out: status, error,
    attempts and time, but no value and no traceback. ``unwrap()`` of a completed one
    raises ``BackgroundError`` (the value is gone) instead of returning a wrong ``None``."""

    budget: int = 0

    def unwrap(self, task_id: str, task_name: str | None = None) -> Any:
        if self.status is TaskStatus.COMPLETED:
            raise BackgroundError(
                f"the result of task {task_name or ''} {task_id} is no longer kept: newer "
                f"results filled the in-process outcome board's budget of {self.budget} "
                "bytes (the task did complete)"
            )
        return super().unwrap(task_id, task_name)


def _capped(outcome: Outcome) -> Outcome:
    """``outcome`` with its error and traceback cut to the monitor's caps."""
    error, trace = outcome.error, outcome.traceback
    capped_error = error if error is None else cap_error(error)
    capped_trace = trace if trace is None else cap_traceback(trace)
    if capped_error is error and capped_trace is trace:
        return outcome
    return dataclasses.replace(outcome, error=capped_error, traceback=capped_trace)


def _size(outcome: Outcome, limit: int) -> int:
    value = outcome.value
    size = 0 if value is None else approx_size(value, limit)
    trace = outcome.traceback
    return size if trace is None else size + len(trace)


class OutcomeBoard:
    """Final outcomes by task id, with waiters, bounded two ways: at most ``max_size``
    outcomes (the oldest dropped whole) and at most ``max_bytes`` of values and tracebacks
    (the oldest then become :class:`EvictedOutcome`: status and error kept, value and
    traceback dropped). The newest outcome is always kept whole, whatever its size.

    Waiting works from any thread or event loop: a waiter is a ``concurrent.futures``
    future, resolved by whichever thread posts the outcome.
    """

    def __init__(self, max_size: int = 10_000, max_bytes: int = OUTCOME_BYTES) -> None:
        self.max_size = max_size
        self.max_bytes = max_bytes
        self._outcomes: OrderedDict[str, Outcome] = OrderedDict()
        self._sizes: dict[str, int] = {}  # task id -> bytes counted, oldest first
        self._bytes = 0
        self._waiters: dict[str, list[cf.Future[Outcome]]] = {}
        self._lock = threading.Lock()

    @property
    def bytes(self) -> int:
        """The estimated bytes of values and tracebacks kept now."""
        return self._bytes

    def post(self, task_id: str, outcome: Outcome) -> None:
        """Record ``task_id``'s outcome and wake everyone waiting for it."""
        if outcome.error is not None:
            outcome = _capped(outcome)
        size = 0
        if outcome.value is not None or outcome.traceback is not None:
            size = _size(outcome, self.max_bytes)
        with self._lock:
            outcomes = self._outcomes
            if task_id in outcomes:
                del outcomes[task_id]
                self._bytes -= self._sizes.pop(task_id, 0)
            outcomes[task_id] = outcome
            if size:
                self._sizes[task_id] = size
                self._bytes += size
            if len(outcomes) > self.max_size:
                old, _ = outcomes.popitem(last=False)
                self._bytes -= self._sizes.pop(old, 0)
            if self._bytes > self.max_bytes:
                self._evict(task_id)
            waiters = self._waiters.pop(task_id, None)
        for fut in waiters or ():
            if not fut.done():
                fut.set_result(outcome)

    def _evict(self, newest: str) -> None:
        """Strip the oldest values until the budget holds (caller holds the lock)."""
        sizes = self._sizes
        while self._bytes > self.max_bytes:
            oldest = next(iter(sizes))
            if oldest == newest:
                break
            self._bytes -= sizes.pop(oldest)
            kept = self._outcomes[oldest]
            self._outcomes[oldest] = EvictedOutcome(
                status=kept.status,
                error=kept.error,
                error_type=kept.error_type,
                attempts=kept.attempts,
                finished_at=kept.finished_at,
                budget=self.max_bytes,
            )

    def get(self, task_id: str) -> Outcome | None:
        """The outcome of ``task_id`` if it is known."""
        return self._outcomes.get(task_id)

    def clear(self, task_id: str) -> None:
        """Forget ``task_id``'s outcome (it is about to run again)."""
        if task_id in self._outcomes:  # a fresh id never is: skip the lock on the hot path
            with self._lock:
                if self._outcomes.pop(task_id, None) is not None:
                    self._bytes -= self._sizes.pop(task_id, 0)

    def future(self, task_id: str) -> cf.Future[Outcome]:
        """A future resolved with ``task_id``'s outcome (at once if it is known)."""
        fut: cf.Future[Outcome] = cf.Future()
        with self._lock:
            outcome = self._outcomes.get(task_id)
            if outcome is None:
                self._waiters.setdefault(task_id, []).append(fut)
                return fut
        fut.set_result(outcome)
        return fut

    def _forget(self, task_id: str, fut: cf.Future[Outcome]) -> None:
        """Drop a waiter that stopped waiting (timed out or cancelled)."""
        with self._lock:
            waiters = self._waiters.get(task_id)
            if waiters is None:
                return
            try:
                waiters.remove(fut)
            except ValueError:
                pass
            if not waiters:
                del self._waiters[task_id]

    async def wait(self, task_id: str, timeout: float | None) -> Outcome:
        """Wait for the outcome. Raises ``TimeoutError`` after ``timeout`` seconds."""
        fut = self.future(task_id)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"task {task_id} did not finish within {timeout}s") from None
        finally:
            if not fut.done() or fut.cancelled():
                self._forget(task_id, fut)

    def wait_sync(self, task_id: str, timeout: float | None) -> Outcome:
        """Blocking form of :meth:`wait`."""
        fut = self.future(task_id)
        try:
            return fut.result(timeout)
        except cf.TimeoutError:
            self._forget(task_id, fut)
            raise TimeoutError(f"task {task_id} did not finish within {timeout}s") from None
