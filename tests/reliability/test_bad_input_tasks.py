"""Bad task calls on every backend: refused at the call site with a clear error, nothing sent,
and nothing already queued is lost (every good task around them runs, counted)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest
import redis

from pacificpy.background.decorators import configure_background_tasks
from pacificpy.errors import TaskArgumentError, TaskSerializationError
from tests.conformance import tasks
from tests.conformance.harness import SIGNING_KEY, Harness
from tests.reliability import _support

pytestmark = pytest.mark.redis

GOOD = 20
WAIT = 60.0


async def around_good_tasks(
    rig: Harness, counter: redis.Redis, scenario: str, bad: Callable[[], None]
) -> _support.Tally:
    """Enqueue GOOD tasks, run ``bad``, enqueue GOOD more; all 2*GOOD must run."""
    keys = _support.new_keys(2 * GOOD, f"call-{rig.name}")
    for key in keys[:GOOD]:
        await tasks.count.delay(key)
    bad()
    for key in keys[GOOD:]:
        await tasks.count.delay(key)
    tally = await asyncio.to_thread(_support.wait_counts, counter, keys, timeout=WAIT)
    _support.record(rig.name, scenario, tally)
    assert tally.lost == 0, tally.missing
    if rig.name == "local":
        assert tally.duplicated == 0
    return tally


async def test_unbindable_arguments(rig: Harness, counter: redis.Redis) -> None:
    def bad() -> None:
        for args, kwargs in [((), {}), (("a", "b"), {}), ((), {"nope": 1}), (("a",), {"key": 1})]:
            with pytest.raises(TaskArgumentError, match=tasks.count.name) as info:
                tasks.count.delay(*args, **kwargs)
            assert info.value.task_name == tasks.count.name

    await around_good_tasks(rig, counter, "call: unbindable arguments", bad)


UNSERIALISABLE: dict[str, tuple[tuple[Any, ...], dict[str, Any], str]] = {
    "object": ((object(),), {}, "value"),
    "set in a dict": (({"a": {1, 2}},), {}, "value"),
    "function kwarg": ((), {"value": lambda: 1}, "value"),
    "int over 64 bits": ((2**70,), {}, "value"),
    "bytes": ((b"\x00\x01",), {}, "value"),
    "non-str dict key": (({1: "a"},), {}, "value"),
}


async def test_unserialisable_arguments(rig: Harness, counter: redis.Redis) -> None:
    def bad() -> None:
        for args, kwargs, where in UNSERIALISABLE.values():
            with pytest.raises(TaskSerializationError) as info:
                tasks.echo.delay(*args, **kwargs)
            assert info.value.argument == where, str(info.value)
            assert where in str(info.value)

    await around_good_tasks(rig, counter, "call: unserialisable arguments", bad)


async def test_non_finite_float_is_refused_at_the_call_site(rig: Harness) -> None:
    # JSON has no NaN or Infinity: the default serializer refuses them, naming the argument,
    # rather than sending a message some worker cannot decode.
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(TaskSerializationError, match="NaN or infinite") as info:
            tasks.echo.delay(value)
        assert info.value.argument == "value", str(info.value)  # by parameter name
        with pytest.raises(TaskSerializationError, match="NaN or infinite") as info:
            tasks.echo.delay(value={"rows": [1.0, value]})
        assert info.value.argument == "value", str(info.value)
    handle = await tasks.echo.delay(1.5)  # finite floats still travel
    assert await handle.result(timeout=WAIT) == 1.5


async def test_oversized_payload(rig: Harness, counter: redis.Redis) -> None:
    assert rig.backend is not None
    configure_background_tasks(rig.backend, signing_key=SIGNING_KEY, max_payload_bytes=10_000)

    def bad() -> None:
        with pytest.raises(TaskSerializationError, match="max_payload_bytes=10000"):
            tasks.echo.delay("x" * 20_000)
        with pytest.raises(TaskSerializationError, match="max_payload_bytes"):
            tasks.echo.delay({"rows": [{"n": i} for i in range(2_000)]})

    await around_good_tasks(rig, counter, "call: payload over max_payload_bytes", bad)
    handle = await tasks.echo.delay("x" * 9_000)  # under the limit: fine
    assert await handle.result(timeout=WAIT) == "x" * 9_000


def test_same_task_id_twice_keeps_the_local_executor_consistent() -> None:
    from pacificpy.background.local import get_local_executor

    executor = get_local_executor(2)
    configure_background_tasks(executor)
    first = tasks.sleep_for.apply_async(args=(0.2,), task_id="same-task-id")
    try:
        second = tasks.sleep_for.apply_async(args=(0.3,), task_id="same-task-id")
    except Exception:  # refusing the duplicate loudly is fine too
        second = None
    assert first.result_sync(timeout=WAIT) in (0.2, 0.3)
    assert second is None or second.id == first.id
    assert executor.join(timeout=2), "the executor never became idle"
    assert executor.queue_length_sync() == 0
    executor.shutdown_sync(timeout=5)
