"""The local executor's async runs on one event loop: a few consumer coroutines and a deque.

An asyncio task per run costs a task object, its registration, a first step scheduled
and two done callbacks; most runs of a busy app are short, so that bookkeeping weighs
more than the run. Instead, up to ``size`` consumer tasks live on the loop and take
messages from one deque: putting a message is an append and, when a consumer is idle,
one wake-up (the most recently parked consumer, whose frames are warm). The number of
consumers is the bound on concurrent async runs (``max_workers``), for free.

Fairness is kept as a task per run had it, without its cost. A task per run runs, in
the loop's next turn, every task queued before it; a consumer's turn likewise runs the
tasks queued when it began, back to back, then yields to the loop if more came meanwhile
(a task that enqueues another, say). While the backlog is short, a turn also ends after
``TURN`` (1 ms), so a burst of tasks does not hold up the requests waiting behind it;
from ``backlog`` queued tasks on (half the executor's ``max_queue_size``), a turn runs
all of them, so the queue cannot grow to ``QueueFull`` because the consumers yield too
often. (Yielding after every run, say, would cap the runs at ``size`` per turn of the
loop while a busy server accepts dozens of requests per turn.)

Consumers start in an empty context, so a run never sees
the context variables of the request that happened to start its consumer. Like a worker
thread, a consumer runs its tasks one after another in one context: a context variable
a task sets and does not reset is seen by the next task of that consumer (PacificPy's
own, ``current_task()``, is set and reset around every run).
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["Consumers"]

_EMPTY = contextvars.Context()
_NEVER = float("inf")

#: How long a consumer's turn may run tasks back to back while the backlog is short (s).
TURN = 0.001


class Consumers:
    """At most ``size`` consumer tasks of one loop, running ``run(item)`` for each item."""

    __slots__ = ("backlog", "closed", "idle", "items", "run", "size", "started", "tasks")

    def __init__(
        self,
        size: int,
        run: Callable[[Any], Awaitable[None]],
        tasks: set[asyncio.Task[Any]],
        *,
        backlog: int = 1000,
    ) -> None:
        self.items: collections.deque[Any] = collections.deque()
        self.idle: list[asyncio.Future[None]] = []  # parked consumers, newest last
        self.size = size
        self.started = 0
        self.run = run
        self.tasks = tasks  # the executor's live tasks (cancelled at shutdown)
        self.closed = False  # set at shutdown, before the consumers are cancelled
        self.backlog = backlog  # from this many queued, a turn runs all of them

    def put(self, item: Any) -> None:
        """Queue ``item``; wake an idle consumer or start one (call on the loop's thread)."""
        self.items.append(item)
        idle = self.idle
        if idle:
            idle.pop().set_result(None)  # (a parked future is never done: see _park)
        elif self.started < self.size:
            self._start()

    def _start(self) -> None:
        self.started += 1
        # Started in an empty context: not a copy of the caller's (a request's).
        task = _EMPTY.run(asyncio.get_running_loop().create_task, self._consume())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _consume(self) -> None:
        items = self.items
        run = self.run
        clock = time.perf_counter
        try:
            while True:
                if not items:
                    await self._park()
                    continue
                # One turn: the tasks queued when it began (as a task per run would have
                # run them all in the loop's next turn), for at most TURN while the
                # backlog is short; tasks queued meanwhile wait for the next turn, so a
                # task that enqueues another cannot hold the loop.
                turn = len(items)
                ends = clock() + TURN if turn < self.backlog else _NEVER
                while turn and items:
                    turn -= 1
                    try:
                        await run(items.popleft())
                    except asyncio.CancelledError:
                        if self.closed:
                            raise
                        # Not a shutdown: a task raised CancelledError of its own, or
                        # cancelled the task it ran in. That run is over; the consumer
                        # goes on.
                        _uncancel()
                    if clock() > ends:
                        break
                if items:
                    await asyncio.sleep(0)  # the turn is over: let the loop serve others
        finally:
            self.started -= 1

    async def _park(self) -> None:
        fut = asyncio.get_running_loop().create_future()
        self.idle.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut in self.idle:
                self.idle.remove(fut)
            raise


def _uncancel() -> None:
    task = asyncio.current_task()
    uncancel = getattr(task, "uncancel", None)  # Python 3.11+
    if uncancel is not None:
        while task.cancelling():  # type: ignore[union-attr]
            uncancel()
