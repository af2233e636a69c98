"""Helpers the Redis backends (Celery, ARQ) share: waiting for a stored outcome, and the
``EnqueueError`` raised when the broker does not take a message."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from pacificpy.background.task import Outcome

__all__ = ["poll_outcome", "poll_outcome_sync"]

_FIRST_PAUSE = 0.005
_MAX_PAUSE = 0.1


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
