"""SPEC §3.2, 3.4-3.7 on every backend: delays, idempotency, retries, timeouts, dead letters,
bad messages."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from typing import Any

import orjson
import pytest

from pacificpy.background import TaskStatus, _codec
from pacificpy.background.task import TaskEnvelope
from pacificpy.errors import TaskFailed, TaskSerializationError, TaskTimeout
from tests.conformance import tasks
from tests.conformance.harness import SIGNING_KEY, Harness

WAIT = 30.0


def _key() -> str:
    return uuid.uuid4().hex


async def _dead_letter_for(harness: Harness, task_id: str, timeout: float = WAIT):  # type: ignore[no-untyped-def]
    backend = harness.backend
    assert backend is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for letter in await backend.dead_letters(limit=1000):
            if letter.task_id == task_id:
                return letter
        await asyncio.sleep(0.05)
    raise AssertionError(f"no dead letter for {task_id} within {timeout}s")


async def test_countdown_delays_start(harness: Harness) -> None:
    sent = time.time()
    handle = await tasks.context.apply_async(countdown=1.0)
    ctx = await handle.result(timeout=WAIT)
    assert ctx["started_at"] >= sent + 0.9


async def test_eta_delays_start_naive_is_utc(harness: Harness) -> None:
    sent = time.time()
    eta = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(seconds=1)
    handle = await tasks.context.apply_async(eta=eta)
    ctx = await handle.result(timeout=WAIT)
    assert ctx["started_at"] >= sent + 0.9


async def test_idempotency_key_enqueues_once(harness: Harness) -> None:
    key = _key()
    first = await tasks.count.apply_async(args=(key,), idempotency_key=key)
    assert await first.result(timeout=WAIT) == 1
    second = await tasks.count.apply_async(args=(key,), idempotency_key=key)
    assert second.id == first.id
    assert await second.result(timeout=WAIT) == 1
    assert int(tasks.store().get(f"pacificpy-test:{key}") or 0) == 1


async def test_retries_until_success(harness: Harness) -> None:
    handle = await tasks.flaky.delay(2)
    ctx = await handle.result(timeout=WAIT)
    assert ctx["attempt"] == 3
    assert ctx["id"] == handle.id


async def test_retries_exhausted_go_to_dead_letters(harness: Harness) -> None:
    handle = await tasks.fail_twice_total.delay("always broken")
    with pytest.raises(TaskFailed) as info:
        await handle.result(timeout=WAIT)
    assert info.value.error_type == "ValueError"
    assert "always broken" in str(info.value)
    assert info.value.attempts == 2
    letter = await _dead_letter_for(harness, handle.id)
    assert letter.task_name == tasks.fail_twice_total.name
    assert letter.reason == "failed"
    assert letter.attempts == 2
    assert letter.args == ["always broken"]
    assert "ValueError" in (letter.traceback or "")
    assert await handle.status() is TaskStatus.FAILED


async def test_only_retry_on_errors_are_retried(harness: Harness) -> None:
    handle = await tasks.fail_not_retried.delay()
    with pytest.raises(TaskFailed) as info:
        await handle.result(timeout=WAIT)
    assert info.value.attempts == 1


async def test_explicit_retry(harness: Harness) -> None:
    ok = await tasks.ask_retry.delay(2)
    assert await ok.result(timeout=WAIT) == 3
    bounded = await tasks.ask_retry.delay(5)
    with pytest.raises(TaskFailed) as info:
        await bounded.result(timeout=WAIT)
    assert info.value.attempts == 3


async def test_async_timeout(harness: Harness) -> None:
    handle = await tasks.slow_async.delay(5.0)
    with pytest.raises(TaskTimeout):
        await handle.result(timeout=WAIT)
    letter = await _dead_letter_for(harness, handle.id)
    assert letter.reason == "timeout"


async def test_sync_timeout(harness: Harness) -> None:
    handle = await tasks.slow_sync.delay(3.0)
    with pytest.raises(TaskTimeout):
        await handle.result(timeout=WAIT)


@pytest.mark.parametrize(
    "task",
    [
        tasks.raise_timeout_error,
        tasks.async_raise_timeout_error,
        tasks.raise_timeout_error_within_limit,
        tasks.async_raise_timeout_error_within_limit,
    ],
    ids=["sync", "async", "sync-with-limit", "async-with-limit"],
)
async def test_task_own_timeout_error_is_a_failure_not_a_timeout(
    harness: Harness, task: Any
) -> None:
    handle = await task.delay("socket read timed out")
    with pytest.raises(TaskFailed) as info:
        await handle.result(timeout=WAIT)
    assert not isinstance(info.value, TaskTimeout)
    assert info.value.error_type == "TimeoutError"
    assert "socket read timed out" in str(info.value)
    letter = await _dead_letter_for(harness, handle.id)
    assert letter.reason == "failed"
    assert "socket read timed out" in letter.error


async def test_timeouts_are_retried_then_dead_lettered(harness: Harness) -> None:
    handle = await tasks.slow_sync_retried.delay(1.5)
    with pytest.raises(TaskTimeout) as info:
        await handle.result(timeout=WAIT)
    assert info.value.attempts == 3
    assert int(tasks.store().get(f"pacificpy-test:attempts:{handle.id}") or 0) == 3
    letter = await _dead_letter_for(harness, handle.id)
    assert letter.reason == "timeout"
    assert letter.attempts == 3


async def test_within_timeout_completes(harness: Harness) -> None:
    handle = await tasks.slow_async.delay(0.01)
    assert await handle.result(timeout=WAIT) == "finished"


async def test_requeue_and_purge_dead_letters(harness: Harness) -> None:
    backend = harness.backend
    assert backend is not None
    flag = _key()
    handle = await tasks.fail_unless_flag.delay(flag)
    with pytest.raises(TaskFailed):
        await handle.result(timeout=WAIT)
    letter = await _dead_letter_for(harness, handle.id)
    tasks.store().set(f"pacificpy-test:{flag}", 1)
    new_id = await backend.requeue_dead_letter(letter.id)
    outcome = await backend.wait_result(new_id, timeout=WAIT)
    assert outcome.value == "ok"
    assert all(d.id != letter.id for d in await backend.dead_letters(limit=1000))
    failing = await tasks.fail_always.delay("for purge")
    await _dead_letter_for(harness, failing.id)
    assert await backend.purge_dead_letters() >= 1
    assert await backend.dead_letters() == []


def _message(
    name: str, args: list[object], *, key: bytes | None = SIGNING_KEY
) -> tuple[str, bytes]:
    env = TaskEnvelope(uuid.uuid4().hex, name, tuple(args), {}, enqueued_at=time.time())
    return env.task_id, _codec.encode(env, signing_key=key)


async def _still_works(harness: Harness) -> None:
    handle = await tasks.add.delay(40, 2)
    assert await handle.result(timeout=WAIT) == 42


async def test_unknown_task_goes_to_dead_letters(harness: Harness) -> None:
    assert harness.backend is not None
    task_id, data = _message("no.such.task", [1])
    harness.inject_raw(harness.backend, data, "default")
    letter = await _dead_letter_for(harness, task_id)
    assert letter.reason == "unknown_task"
    await _still_works(harness)


async def test_garbage_goes_to_dead_letters(harness: Harness) -> None:
    assert harness.backend is not None
    marker = _key()
    harness.inject_raw(harness.backend, b"\x00\xffnot json " + marker.encode(), "default")
    backend = harness.backend
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if any(marker in d.data for d in await backend.dead_letters(limit=1000)):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("garbage message did not reach the dead-letter queue")
    await _still_works(harness)


async def test_wrong_shape_goes_to_dead_letters(harness: Harness) -> None:
    assert harness.backend is not None
    task_id, data = _message(tasks.add.name, ["only one"])
    harness.inject_raw(harness.backend, data, "default")
    letter = await _dead_letter_for(harness, task_id)
    assert letter.reason == "rejected"
    await _still_works(harness)


async def test_tampered_message_goes_to_dead_letters(harness: Harness) -> None:
    assert harness.backend is not None
    task_id, data = _message(tasks.add.name, [1, 2])
    tampered = data.replace(b"[1,2]", b"[1,3]")
    assert tampered != data
    harness.inject_raw(harness.backend, tampered, "default")
    letter = await _dead_letter_for(harness, task_id)
    assert letter.reason == "rejected"
    assert "signature" in letter.error
    await _still_works(harness)


async def test_unsigned_message_goes_to_dead_letters(harness: Harness) -> None:
    assert harness.backend is not None
    task_id, data = _message(tasks.add.name, [1, 2], key=None)
    harness.inject_raw(harness.backend, data, "default")
    letter = await _dead_letter_for(harness, task_id)
    assert letter.reason == "rejected"
    await _still_works(harness)


async def test_pickle_refused_at_call_site(harness: Harness) -> None:
    with pytest.raises(TaskSerializationError, match="allow_pickle"):
        tasks.pickled.delay({"a": 1})


async def test_pickled_message_refused_by_worker(harness: Harness) -> None:
    assert harness.backend is not None
    env = TaskEnvelope(uuid.uuid4().hex, tasks.pickled.name, ({"a": 1},), {}, serializer="pickle")
    data = _codec.encode(env, signing_key=SIGNING_KEY)
    assert orjson.loads(data.split(b".", 2)[2])["s"] == "pickle"
    harness.inject_raw(harness.backend, data, "default")
    letter = await _dead_letter_for(harness, env.task_id)
    assert "pickle" in letter.error
    await _still_works(harness)


async def test_queue_length_unconsumed(harness: Harness) -> None:
    backend = harness.backend
    assert backend is not None
    queue = f"unconsumed-{_key()[:8]}"
    assert await backend.queue_length(queue) == 0
    for i in range(3):
        await tasks.add.apply_async(args=(i, i), queue=queue)
    assert await backend.queue_length(queue) == 3
    assert backend.queue_length_sync(queue) == 3
