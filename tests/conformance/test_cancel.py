"""SPEC §10.4 cancellation on every backend: a task not started never starts, a running one
is stopped (async: ``CancelledError``; sync: ``current_task().cancelled``), the final state
is ``cancelled`` (not a failure, never a dead letter), a finished task is left alone.

The Celery and ARQ runs cancel from this process a task a worker process runs: the cancel
reaches it over Redis pub/sub, promptly (the tasks here would otherwise run a minute).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest

from pacificpy.background import TaskStatus, get_handle
from pacificpy.background.monitor import configure_task_monitor, get_task_monitor
from pacificpy.background.task import new_task_id
from pacificpy.errors import TaskCancelled
from tests.background.backends._arq_procs import pid_alive
from tests.conformance import tasks
from tests.conformance.harness import Harness

WAIT = 30.0
#: A cancel must reach a running task well before this (it would run for a minute).
PROMPT = 10.0


def marked(what: str, task_id: str) -> bool:
    return bool(tasks.store().exists(f"pacificpy-test:{what}:{task_id}"))


async def wait_marked(what: str, task_id: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not marked(what, task_id):
        assert time.monotonic() < deadline, f"task {task_id} never marked {what}"
        await asyncio.sleep(0.01)


async def assert_cancelled(harness: Harness, handle: Any) -> None:
    """``result()`` raises ``TaskCancelled``, the status says so, and no dead letter."""
    with pytest.raises(TaskCancelled) as info:
        await handle.result(timeout=WAIT)
    assert info.value.task_id == handle.id
    assert await handle.status() is TaskStatus.CANCELLED
    assert harness.backend is not None
    letters = await harness.backend.dead_letters(1000)
    assert handle.id not in {letter.task_id for letter in letters}


async def after_a_later_task(countdown: float) -> None:
    """Wait until a task enqueued now with ``countdown`` has run: deliveries due before it
    have been handled by then."""
    handle = await tasks.add.apply_async(args=(1, 1), countdown=countdown)
    assert await handle.result(timeout=WAIT) == 2


def counted(key: str) -> int:
    raw = tasks.store().get(f"pacificpy-test:{key}")
    return int(raw) if raw else 0


async def test_a_delayed_task_never_starts(harness: Harness) -> None:
    key = f"cancel-delayed-{new_task_id()}"
    handle = await tasks.count.apply_async(args=(key,), countdown=1.0)
    assert await handle.cancel() is True
    await after_a_later_task(2.0)
    assert counted(key) == 0
    await assert_cancelled(harness, handle)


async def test_a_queued_task_cancelled_before_its_delivery_never_starts(harness: Harness) -> None:
    """The cancel is laid first; the delivery that arrives after it is refused, wherever
    it goes. (It is due a moment later: a Redis worker hears of a cancel over pub/sub, in
    milliseconds; docs/cancellation.md says what a delivery inside that window does.)"""
    key = f"cancel-queued-{new_task_id()}"
    task_id = new_task_id()
    assert await get_handle(task_id).cancel() is True
    handle = await tasks.count.apply_async(args=(key,), task_id=task_id, countdown=0.3)
    await after_a_later_task(0.5)
    assert counted(key) == 0
    await assert_cancelled(harness, handle)


async def test_a_task_waiting_to_retry_never_runs_again(harness: Harness) -> None:
    key = f"cancel-retry-{new_task_id()}"
    handle = await tasks.count_then_fail.delay(key)
    deadline = time.monotonic() + WAIT
    while counted(key) < 1:
        assert time.monotonic() < deadline, "the first attempt never ran"
        await asyncio.sleep(0.01)
    assert await handle.cancel() is True
    await after_a_later_task(3.0)  # past the 1.5 s retry backoff
    assert counted(key) == 1
    await assert_cancelled(harness, handle)


async def test_a_running_async_task_gets_cancelled_error(harness: Harness) -> None:
    handle = await tasks.async_until_cancelled.delay(60.0)
    await wait_marked("started", handle.id)
    started = time.monotonic()
    assert await handle.cancel() is True
    await wait_marked("cancel-seen", handle.id, timeout=PROMPT)
    assert time.monotonic() - started < PROMPT
    await assert_cancelled(harness, handle)


async def test_a_running_sync_task_sees_cancelled(harness: Harness) -> None:
    handle = await tasks.sync_until_cancelled.delay(60.0)
    await wait_marked("started", handle.id)
    assert await handle.cancel() is True
    await wait_marked("cancel-seen", handle.id, timeout=PROMPT)
    await assert_cancelled(harness, handle)


def test_cancel_sync_of_a_running_task(harness: Harness) -> None:
    handle = tasks.sync_until_cancelled.delay(60.0)
    deadline = time.monotonic() + WAIT
    while not marked("started", handle.id):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert get_handle(handle.id).cancel_sync() is True
    deadline = time.monotonic() + PROMPT
    while not marked("cancel-seen", handle.id):
        assert time.monotonic() < deadline, "the cancel never reached the running task"
        time.sleep(0.01)
    with pytest.raises(TaskCancelled):
        handle.result_sync(timeout=WAIT)
    assert handle.status_sync() is TaskStatus.CANCELLED


async def test_cancelling_a_finished_task_changes_nothing(harness: Harness) -> None:
    handle = await tasks.add.delay(2, 3)
    assert await handle.result(timeout=WAIT) == 5
    assert await handle.cancel() is False
    assert await handle.status() is TaskStatus.COMPLETED
    assert await handle.result(timeout=WAIT) == 5


async def test_cancelling_a_cancelled_task_returns_false(harness: Harness) -> None:
    handle = await tasks.count.apply_async(args=(f"twice-{new_task_id()}",), countdown=5.0)
    assert await handle.cancel() is True
    assert await handle.cancel() is False
    await assert_cancelled(harness, handle)


async def test_cancelling_a_failed_task_changes_nothing(harness: Harness) -> None:
    handle = await tasks.fail_always.delay("no")
    with pytest.raises(Exception) as info:
        await handle.result(timeout=WAIT)
    assert not isinstance(info.value, TaskCancelled)
    assert await handle.cancel() is False
    assert await handle.status() is TaskStatus.FAILED


def test_cancel_needs_a_string_id(harness: Harness) -> None:
    assert harness.backend is not None
    with pytest.raises(TypeError, match="task id is a string"):
        harness.backend.cancel_sync(42)  # type: ignore[arg-type]


async def test_terminate_kills_the_process_running_it(harness: Harness) -> None:
    handle = await tasks.sync_ignoring_cancel.delay(60.0)
    await wait_marked("started", handle.id)
    pid = int(tasks.store().get(f"pacificpy-test:pid:{handle.id}") or 0)
    assert pid and pid_alive(pid)
    assert await handle.cancel(terminate=True) is True
    deadline = time.monotonic() + PROMPT
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"pool process {pid} still runs"
        await asyncio.sleep(0.02)
    await assert_cancelled(harness, handle)


# -- progress (SPEC §10.4) -------------------------------------------------------------------
async def test_progress_reaches_the_caller(harness: Harness) -> None:
    """The worker (another process on Celery and ARQ) reports; this process reads it from
    the shared Redis monitor store."""
    configure_task_monitor(redis_url=os.environ["PACIFICPY_TEST_REDIS"])
    handle = await tasks.report_progress.delay(4)
    await wait_marked("reported", handle.id)
    deadline = time.monotonic() + WAIT
    while await handle.progress() != (4.0, 4.0, "step 4"):
        assert time.monotonic() < deadline, await handle.progress()
        await asyncio.sleep(0.02)
    record = get_task_monitor().get(handle.id)
    assert record is not None and record.progress_message == "step 4"
    tasks.store().set(f"pacificpy-test:release:{handle.id}", 1, ex=600)
    assert await handle.result(timeout=WAIT) == 4
    assert await get_handle(handle.id).progress() == (4.0, 4.0, "step 4")  # kept at the end


async def test_no_progress_is_none(harness: Harness) -> None:
    handle = await tasks.add.delay(1, 2)
    assert await handle.result(timeout=WAIT) == 3
    assert await handle.progress() is None
