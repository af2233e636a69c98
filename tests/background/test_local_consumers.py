"""The bound on async runs per event loop (``max_workers`` consumers), and the consumers."""

from __future__ import annotations

import asyncio
import contextvars
import time

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
        (consumers,) = ex._consumers.values()
        assert consumers.started == 3 and len(consumers.idle) == 3  # all parked again
    finally:
        await ex.shutdown()


_request_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_var", default="unset")


@background(name="tests.consumers.read_var")
async def read_var() -> str:
    return _request_var.get()


async def test_a_run_does_not_see_the_context_of_the_request_that_enqueued_it() -> None:
    ex = get_local_executor(max_workers=2)
    configure_background_tasks(ex)
    await ex.startup()
    try:
        _request_var.set("request 1")  # the first request starts a consumer ...
        first = read_var.delay()
        assert await first.result(timeout=WAIT) == "unset"
        _request_var.set("request 2")
        assert await read_var.delay().result(timeout=WAIT) == "unset"
    finally:
        await ex.shutdown()


@background(name="tests.consumers.raise_cancelled")
async def raise_cancelled() -> None:
    raise asyncio.CancelledError  # a task's own, not a cancel of PacificPy's


@background(name="tests.consumers.value")
async def value(i: int) -> int:
    return i


async def test_a_run_raising_cancelled_error_leaves_its_consumer_running() -> None:
    ex = get_local_executor(max_workers=1)  # one consumer: it must survive the first run
    configure_background_tasks(ex)
    await ex.startup()
    try:
        raise_cancelled.delay()
        handles = [value.delay(i) for i in range(3)]
        assert [await h.result(timeout=WAIT) for h in handles] == [0, 1, 2]
    finally:
        await ex.shutdown()


_links = 0


@background(name="tests.consumers.chain")
async def chain(n: int) -> None:
    global _links
    _links += 1
    if n:
        chain.delay(n - 1)  # queued during this run: it waits for the consumer's next turn


async def test_a_task_that_enqueues_another_does_not_hold_the_loop() -> None:
    global _links
    _links = 0
    ex = get_local_executor(max_workers=1)
    configure_background_tasks(ex)
    await ex.startup()
    try:
        chain.delay(1000)
        await asyncio.sleep(0)  # one turn of the loop: one link of the chain, not all
        await asyncio.sleep(0)
        assert 0 < _links < 10
        assert await asyncio.to_thread(ex.join, WAIT)
        assert _links == 1001
    finally:
        await ex.shutdown()


@background(name="tests.consumers.spin")
async def spin() -> None:
    ends = time.perf_counter() + 0.0001  # 100 µs of CPU: 64 of them overrun a 1 ms turn
    while time.perf_counter() < ends:
        pass


_burst = 0


@background(name="tests.consumers.burst")
async def burst() -> None:
    global _burst
    _burst += 1


async def test_a_burst_of_tasks_yields_to_the_loop_while_the_backlog_is_short() -> None:
    global _burst
    _burst = 0
    ex = get_local_executor(max_workers=1)  # backlog threshold: 5,000 queued
    configure_background_tasks(ex)
    await ex.startup()
    try:
        for _ in range(3000):
            burst.delay()
        await asyncio.sleep(0)  # one turn of the loop: the consumer's turn ends after 1 ms
        assert 0 < _burst < 3000
        assert await asyncio.to_thread(ex.join, WAIT)
        assert _burst == 3000
    finally:
        await ex.shutdown()


async def test_consumers_keep_up_with_many_tasks_enqueued_per_turn() -> None:
    # A busy server enqueues a task per request, dozens of requests per turn of its loop.
    # Here the tasks need more than the consumers' time-bounded turns give them; once the
    # backlog reaches half the queue, a turn runs every task queued, so the queue never
    # fills up.
    ex = get_local_executor(max_workers=2, max_queue_size=500)
    configure_background_tasks(ex)
    await ex.startup()
    try:
        for _ in range(100):
            for _ in range(64):
                spin.delay()  # QueueFull here if the consumers fell behind
            await asyncio.sleep(0)
        assert await asyncio.to_thread(ex.join, WAIT)
    finally:
        await ex.shutdown()


async def test_a_cancel_arriving_after_its_run_ended_does_not_reach_the_task() -> None:
    # A consumer's task runs one message after another: a cancel sent while the run was
    # live but delivered after it was unregistered must not cancel the next run.
    from pacificpy.background import cancellation

    host = asyncio.ensure_future(asyncio.sleep(WAIT))  # stands for a consumer's task
    run = cancellation.register("t-stale")
    run.attach(host)
    run.cancel()  # schedules the task's cancel on this loop ...
    cancellation.unregister(run)  # ... and the run ends before the loop gets to it
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert run.cancelled and not host.cancelled()
    host.cancel()
