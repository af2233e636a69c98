"""The local executor keeps its memory and threads bounded: replacement threads for stuck
sync tasks are capped, idempotency keys expire and are pruned, and a waiter that gave up
leaves nothing on the outcome board. Also: timeouts are retried like other failures."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from pacificpy.background.backends import memory as _memory
from pacificpy.background.decorators import background, configure_background_tasks, get_backend
from pacificpy.background.local import LocalExecutor, get_local_executor
from pacificpy.background.task import TaskEnvelope
from pacificpy.errors import TaskTimeout
from pacificpy.types import TaskStatus
from tests.support.wait import wait_for

KEY = b"test-local-bounds-signing-key-012345"
DAY = 86_400.0
WAIT = 30.0

release = threading.Event()
attempts: list[int] = []


@background(timeout=0.2)
def stuck_until_released() -> str:
    assert release.wait(timeout=WAIT)
    return "released"


@background(timeout=0.2, retries=2, retry_backoff=0.01, retry_jitter=False)
def always_overruns() -> str:
    attempts.append(1)
    assert release.wait(timeout=WAIT)
    return "late"


@background
def blocked() -> str:
    assert release.wait(timeout=WAIT)
    return "done"


@background
def plus_one(n: int) -> int:
    return n + 1


@pytest.fixture
def executor() -> Iterator[LocalExecutor]:
    release.clear()
    attempts.clear()
    ex = get_local_executor(max_workers=2)
    configure_background_tasks(ex, signing_key=KEY)
    yield ex
    release.set()
    ex.shutdown_sync(timeout=10)


def _worker_threads(before: set[threading.Thread]) -> int:
    """Live worker threads started since ``before`` (earlier tests' threads may linger)."""
    return sum(
        t.name.startswith("pacificpy-worker") and t not in before for t in threading.enumerate()
    )


# -- item: replacement threads are capped ----------------------------------------------------
def test_stuck_sync_tasks_start_at_most_max_workers_extra_threads(
    executor: LocalExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    before = set(threading.enumerate())
    plus_one.delay(0).result_sync(timeout=WAIT)  # the pool is up: max_workers threads
    assert _worker_threads(before) == executor.max_workers
    caplog.set_level(logging.WARNING, logger="pacificpy.background")
    handles = [stuck_until_released.delay() for _ in range(6)]

    def timed_out() -> int:
        return sum(h.status_sync() is TaskStatus.FAILED for h in handles)

    wait_for(lambda: timed_out() >= 4, WAIT, what="four timeouts")
    # Two original threads and two replacements are stuck; no more threads are started,
    # and the last two tasks wait for a free thread instead.
    assert len(executor._threads) == 2 * executor.max_workers
    assert _worker_threads(before) == 2 * executor.max_workers
    assert timed_out() == 4
    assert [h.status_sync() for h in handles[4:]] == [TaskStatus.QUEUED] * 2
    assert executor.queue_length_sync() == 2
    assert "4 worker threads are stuck" in caplog.text
    assert "max_workers=2 extra threads" in caplog.text

    release.set()  # the stuck tasks return: their threads serve the waiting tasks
    assert [h.result_sync(timeout=WAIT) for h in handles[4:]] == ["released"] * 2
    assert executor.join(timeout=WAIT)
    # and the pool shrinks back to max_workers once every stuck thread is free
    wait_for(lambda: len(executor._threads) == executor.max_workers, WAIT, what="pool shrink")
    wait_for(lambda: _worker_threads(before) == executor.max_workers, WAIT, what="threads end")
    assert plus_one.delay(1).result_sync(timeout=WAIT) == 2


# -- item: timeouts are retried like any failure ---------------------------------------------
def test_timeouts_are_retried_then_dead_lettered(executor: LocalExecutor) -> None:
    handle = always_overruns.delay()
    with pytest.raises(TaskTimeout) as info:
        handle.result_sync(timeout=WAIT)
    assert info.value.attempts == 3
    assert len(attempts) == 3
    (letter,) = executor.dead_letters_sync()
    assert letter.task_id == handle.id
    assert letter.reason == "timeout"
    assert letter.attempts == 3


# -- item: idempotency keys expire and are pruned --------------------------------------------
@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1_000.0]
    monkeypatch.setattr(_memory, "_clock", lambda: now[0])
    return now


def test_default_idempotency_ttl_is_a_day(executor: LocalExecutor, clock: list[float]) -> None:
    assert LocalExecutor().idempotency_ttl == DAY
    assert get_backend().idempotency_ttl == DAY  # configure_background_tasks' default
    first = plus_one.apply_async(args=(1,), idempotency_key="once")
    assert first.result_sync(timeout=WAIT) == 2
    assert executor._keys[(plus_one.name, "once")] == clock[0] + DAY
    clock[0] += DAY - 1  # still held a second before the day is out
    assert plus_one.apply_async(args=(5,), idempotency_key="once").id == first.id
    assert first.result_sync(timeout=WAIT) == 2
    clock[0] += 2  # a day later the key is free again
    again = plus_one.apply_async(args=(7,), idempotency_key="once")
    assert again.result_sync(timeout=WAIT) == 8


def test_expired_idempotency_keys_are_pruned(executor: LocalExecutor, clock: list[float]) -> None:
    handles = [plus_one.apply_async(args=(i,), idempotency_key=f"k{i}") for i in range(200)]
    assert [h.result_sync(timeout=WAIT) for h in handles] == list(range(1, 201))
    assert len(executor._keys) == 200
    clock[0] += DAY + 1
    plus_one.apply_async(args=(0,), idempotency_key="fresh").result_sync(timeout=WAIT)
    assert list(executor._keys) == [(plus_one.name, "fresh")]
    assert len(executor._key_expiry) <= 2 * len(executor._keys) + 64


def test_released_keys_do_not_grow_the_expiry_heap(
    executor: LocalExecutor, clock: list[float]
) -> None:
    # The same key taken and released over and over (a failed task frees its key): stale
    # heap entries are dropped once they outnumber the live keys.
    for i in range(500):
        env = TaskEnvelope(f"t{i}", plus_one.name, (i,), {}, idempotency_key="again")
        assert executor._claim(env)
        executor._keys.pop((plus_one.name, "again"))
        clock[0] += 1
    assert len(executor._key_expiry) <= 2 * len(executor._keys) + 64


# -- item: a waiter that timed out leaves the outcome board ----------------------------------
async def test_timed_out_waits_leave_no_waiter_behind(executor: LocalExecutor) -> None:
    handle = blocked.delay()
    board = executor._outcomes
    for _ in range(5):
        with pytest.raises(TimeoutError):
            handle.result_sync(timeout=0.01)
        with pytest.raises(TimeoutError):
            await handle.result(timeout=0.01)
    assert handle.id not in board._waiters
    assert sum(len(w) for w in board._waiters.values()) == 0
    release.set()
    assert await handle.result(timeout=WAIT) == "done"
    assert board._waiters == {}
