"""The bound on async runs per event loop (``max_workers``), and its gate's hand-offs."""

from __future__ import annotations

import asyncio

from pacificpy.background._slots import Slots
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import get_local_executor

WAIT = 30.0
_running = 0
_peak = 0
_release: asyncio.Event | None = None


@background(name="tests.slots.hold")
async def hold() -> int:
    global _running, _peak
    _running += 1
    _peak = max(_peak, _running)
    try:
        assert _release is not None
        await _release.wait()
    finally:
        _running -= 1
    return 1


async def test_async_runs_on_one_loop_never_exceed_max_workers() -> None:
    global _release, _peak
    _release, _peak = asyncio.Event(), 0
    ex = get_local_executor(max_workers=3)
    configure_background_tasks(ex)
    await ex.startup()  # async runs on this loop
    try:
        handles = [hold.delay() for _ in range(10)]
        for _ in range(50):  # let every run that may start, start
            await asyncio.sleep(0.01)
        assert _running == 3
        _release.set()
        values = [await h.result(timeout=WAIT) for h in handles]
        assert values == [1] * 10
        assert _peak == 3
        assert sum(s.free for s in ex._semaphores.values()) == 3  # every slot came back
    finally:
        await ex.shutdown()


async def test_a_waiter_cancelled_with_its_slot_in_hand_passes_it_on() -> None:
    slots = Slots(1)
    slots.free -= 1  # one run holds the only slot
    first = asyncio.ensure_future(slots.wait())
    second = asyncio.ensure_future(slots.wait())
    await asyncio.sleep(0)
    slots.release()  # handed to the first waiter ...
    first.cancel()  # ... which is cancelled before it resumes
    await asyncio.wait_for(second, WAIT)  # the slot reached the second waiter
    assert first.cancelled()
    assert slots.free == 0 and not slots.waiters
    slots.release()
    assert slots.free == 1


async def test_a_waiter_cancelled_while_waiting_leaves_the_line() -> None:
    slots = Slots(1)
    slots.free -= 1
    waiter = asyncio.ensure_future(slots.wait())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.sleep(0)
    assert waiter.cancelled() and not slots.waiters
    slots.release()
    assert slots.free == 1
