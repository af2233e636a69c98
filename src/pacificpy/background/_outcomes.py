"""In-process outcome board: where in-memory backends keep final outcomes for waiters."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
from collections import OrderedDict

from pacificpy.background.task import Outcome

__all__ = ["OutcomeBoard"]


class OutcomeBoard:
    """Final outcomes by task id, bounded to ``max_size`` (oldest dropped), with waiters.

    Waiting works from any thread or event loop: a waiter is a ``concurrent.futures``
    future, resolved by whichever thread posts the outcome.
    """

    def __init__(self, max_size: int = 10_000) -> None:
        self.max_size = max_size
        self._outcomes: OrderedDict[str, Outcome] = OrderedDict()
        self._waiters: dict[str, list[cf.Future[Outcome]]] = {}
        self._lock = threading.Lock()

    def post(self, task_id: str, outcome: Outcome) -> None:
        """Record ``task_id``'s outcome and wake everyone waiting for it."""
        with self._lock:
            self._outcomes[task_id] = outcome
            if len(self._outcomes) > self.max_size:
                self._outcomes.popitem(last=False)
            waiters = self._waiters.pop(task_id, None)
        for fut in waiters or ():
            if not fut.done():
                fut.set_result(outcome)

    def get(self, task_id: str) -> Outcome | None:
        """The outcome of ``task_id`` if it is known."""
        return self._outcomes.get(task_id)

    def clear(self, task_id: str) -> None:
        """Forget ``task_id``'s outcome (it is about to run again)."""
        if task_id in self._outcomes:  # a fresh id never is: skip the lock on the hot path
            with self._lock:
                self._outcomes.pop(task_id, None)

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
