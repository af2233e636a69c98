"""SPEC §3.2-3.3 on every backend: enqueue, results, context, chaining, isolation."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from pacificpy.background import TaskStatus
from pacificpy.errors import TaskArgumentError, TaskFailed, TaskSerializationError
from tests.conformance import tasks
from tests.conformance.harness import Harness

WAIT = 30.0


async def test_sync_task_result(harness: Harness) -> None:
    handle = await tasks.add.delay(2, 3)
    assert await handle.result(timeout=WAIT) == 5


async def test_async_task_result(harness: Harness) -> None:
    handle = await tasks.async_add.delay(4, 5)
    assert await handle.result(timeout=WAIT) == 9


async def test_delay_without_await_still_enqueues(harness: Harness) -> None:
    handle = tasks.add.delay(1, 1)  # not awaited: the enqueue has started anyway
    assert await handle.result(timeout=WAIT) == 2


def test_delay_from_code_without_loop(harness: Harness) -> None:
    handle = tasks.add.delay(20, 22)
    assert handle.result_sync(timeout=WAIT) == 42
    assert handle.status_sync() is TaskStatus.COMPLETED


async def test_json_round_trip(harness: Harness) -> None:
    value = {"s": "é", "n": [1, 2.5, None, True], "d": {"k": "v"}}
    handle = await tasks.echo.delay(value)
    assert await handle.result(timeout=WAIT) == value


async def test_a_result_json_cannot_carry_as_is_still_ends_the_task(harness: Harness) -> None:
    # Never a task left "running" for good: a store outside the process keeps the value as
    # JSON, converted (as ARQ's job results always were); the local executor keeps it as is.
    handle = await tasks.unusual_result.delay()
    value = await handle.result(timeout=WAIT)
    assert await handle.status() is TaskStatus.COMPLETED
    if harness.name == "local":
        assert value["keys"] == {1: "a"} and value["set"] == {1, 2} and value["bytes"] == b"ok"
    else:
        assert value == {"keys": {"1": "a"}, "set": [1, 2], "bytes": "ok",
                         "exc": {"error": "v", "error_type": "ValueError"}}  # fmt: skip


async def test_a_result_json_cannot_write_at_all_still_ends_the_task(harness: Harness) -> None:
    # A circular value: a store outside the process keeps what it can, the rest as text.
    handle = await tasks.circular_result.delay()
    value = await handle.result(timeout=WAIT)
    assert await handle.status() is TaskStatus.COMPLETED
    if harness.name == "local":
        assert value["loop"][1] is value["loop"]
    else:
        assert value == {"ok": True, "loop": [1, "[1, [...]]"]}


@pytest.mark.parametrize(
    "task", [tasks.raise_cancelled, tasks.async_raise_cancelled], ids=["sync", "async"]
)
async def test_a_task_raising_cancelled_error_itself_fails(harness: Harness, task: Any) -> None:
    # Nobody cancelled it: a failure like any other exception, never a run left "running"
    # without an outcome, nor a worker shutting down.
    handle = await task.delay("on its own")
    with pytest.raises(TaskFailed) as info:
        await handle.result(timeout=WAIT)
    assert info.value.error_type == "CancelledError"
    assert "on its own" in str(info.value)
    assert await handle.status() in (TaskStatus.FAILED, TaskStatus.DEAD)
    after = await tasks.add.delay(2, 2)  # the worker goes on
    assert await after.result(timeout=WAIT) == 4


async def test_kwargs_and_apply_async(harness: Harness) -> None:
    handle = await tasks.add.apply_async(args=(1,), kwargs={"b": 10})
    assert await handle.result(timeout=WAIT) == 11


@pytest.mark.parametrize("task", [tasks.context, tasks.async_context], ids=["sync", "async"])
async def test_current_task_inside(harness: Harness, task: Any) -> None:
    before = time.time()
    handle = await task.delay()
    ctx = await handle.result(timeout=WAIT)
    assert ctx["id"] == handle.id
    assert ctx["name"] == task.name
    assert ctx["attempt"] == 1
    assert ctx["queue"] == "default"
    assert before - 1 <= ctx["enqueued_at"] <= ctx["started_at"] + 1
    assert ctx["parent_id"] is None


async def test_status_reaches_completed(harness: Harness) -> None:
    handle = await tasks.add.delay(1, 2)
    await handle.result(timeout=WAIT)
    assert await handle.status() is TaskStatus.COMPLETED


async def test_chained_sync_task_enqueues_next_without_await(harness: Harness) -> None:
    parent = await tasks.chain_parent.delay(1)
    child_id = await parent.result(timeout=WAIT)
    backend = harness.backend
    assert backend is not None
    outcome = await backend.wait_result(child_id, timeout=WAIT)
    assert outcome.value["x"] == 2
    assert outcome.value["parent_id"] == parent.id


async def test_chained_async_task(harness: Harness) -> None:
    parent = await tasks.async_chain_parent.delay(5)
    child_id = await parent.result(timeout=WAIT)
    assert harness.backend is not None
    outcome = await harness.backend.wait_result(child_id, timeout=WAIT)
    assert outcome.value["x"] == 6
    assert outcome.value["parent_id"] == parent.id


async def test_bad_arguments_rejected_at_call_site(harness: Harness) -> None:
    with pytest.raises(TaskArgumentError):
        tasks.add.delay(1)
    with pytest.raises(TaskArgumentError):
        tasks.add.delay(1, 2, 3)
    with pytest.raises(TaskArgumentError):
        tasks.add.apply_async(args=(1,), kwargs={"c": 2})


async def test_unserializable_argument_named_at_call_site(harness: Harness) -> None:
    with pytest.raises(TaskSerializationError) as info:
        tasks.echo.delay({1, 2})
    assert info.value.argument == "value"  # the parameter's name, not its position
    assert "argument value " in str(info.value)
    with pytest.raises(TaskSerializationError) as info:
        tasks.add.apply_async(args=(1,), kwargs={"b": object()})
    assert info.value.argument == "b"


async def test_one_failure_does_not_stop_others(harness: Harness) -> None:
    bad = [await tasks.fail_always.delay(f"boom {i}") for i in range(3)]
    good = [await tasks.add.delay(i, i) for i in range(5)]
    assert [await h.result(timeout=WAIT) for h in good] == [0, 2, 4, 6, 8]
    for h in bad:
        with pytest.raises(Exception, match="boom"):
            await h.result(timeout=WAIT)


async def test_result_timeout(harness: Harness) -> None:
    handle = await tasks.sleep_for.delay(2.0)
    with pytest.raises(TimeoutError):
        await handle.result(timeout=0.2)
    assert await handle.result(timeout=WAIT) == 2.0


async def test_many_concurrent_delays(harness: Harness) -> None:
    handles = await asyncio.gather(*(tasks.add.delay(i, 1) for i in range(50)))
    results = await asyncio.gather(*(h.result(timeout=WAIT) for h in handles))
    assert results == [i + 1 for i in range(50)]
