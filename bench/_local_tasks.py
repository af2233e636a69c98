"""Tasks of the in-process scenarios (local executor, memory, pickup), and their counters.

Kept in their own module so that each task is registered once, whatever imports it.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

from pacificpy.background.decorators import background


class Counter:
    """Counts task runs; ``done`` is set when ``target`` runs have happened."""

    def __init__(self) -> None:
        self.reset(0)

    def reset(self, target: int) -> None:
        self.target = target
        self._count = itertools.count(1)  # next() on it is atomic under the GIL
        self.done = threading.Event()
        self.adone: asyncio.Event | None = None

    def hit(self) -> None:
        if next(self._count) >= self.target:
            self.done.set()
            if self.adone is not None:
                self.adone.set()


COUNTER = Counter()
#: Set to release the blocking tasks (the memory scenario keeps workers busy with them).
RELEASE = threading.Event()
#: Pickup: the task's start time (perf_counter) and an event per sample.
STARTED: list[float] = []
STARTED_EVENT = threading.Event()
ASTARTED: asyncio.Event | None = None


def noop_fn() -> None:
    """The no-op body shared by every contender (counts its run)."""
    COUNTER.hit()


async def anoop_fn() -> None:
    """The async no-op body shared by every contender."""
    COUNTER.hit()


@background(name="bench.local.noop_sync")
def noop_sync() -> None:
    """A sync no-op task."""
    COUNTER.hit()


@background(name="bench.local.noop_async")
async def noop_async() -> None:
    """An async no-op task."""
    COUNTER.hit()


@background(name="bench.local.block")
def block() -> None:
    """Hold a worker thread until ``RELEASE`` is set."""
    RELEASE.wait(120)


def pickup_fn() -> None:
    """Record when it started."""
    STARTED.append(time.perf_counter())
    STARTED_EVENT.set()


async def apickup_fn() -> None:
    """Record when it started (async)."""
    STARTED.append(time.perf_counter())
    if ASTARTED is not None:
        ASTARTED.set()


@background(name="bench.local.pickup_sync")
def pickup_sync() -> None:
    """Record when it started."""
    pickup_fn()


@background(name="bench.local.pickup_async")
async def pickup_async() -> None:
    """Record when it started (async)."""
    await apickup_fn()
