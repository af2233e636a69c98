"""The local executor's bound on async runs per event loop: a counting gate.

It does what ``asyncio.Semaphore`` does for ``max_workers``, with the common case (a
free slot) taken by plain attribute arithmetic in the caller, no call at all: the
semaphore's ``async with`` costs seven Python calls per task. A run that finds no free
slot awaits :meth:`Slots.wait`; :meth:`Slots.release` hands the slot straight to the
oldest waiter (so ``free`` is above 0 only while nobody waits), else frees it.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

__all__ = ["Slots"]


class Slots:
    """``free`` slots of one event loop, and the runs waiting for one (oldest first)."""

    __slots__ = ("free", "waiters")

    def __init__(self, size: int) -> None:
        self.free = size
        self.waiters: collections.deque[asyncio.Future[Any]] = collections.deque()

    async def wait(self) -> None:
        """Wait until a releasing run hands this one its slot (call when ``free`` is 0)."""
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot came with the cancel: pass it on
            else:
                try:
                    self.waiters.remove(fut)
                except ValueError:
                    pass
            raise

    def release(self) -> None:
        """Give the slot to the oldest waiter still waiting, else free it."""
        waiters = self.waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.free += 1
