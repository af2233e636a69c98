"""``current_task().set_progress()``: checked at the call, kept by every monitor store;
the ``cancelled`` event of the Redis store orders after the task's own events."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from pacificpy.background import current_task
from pacificpy.background.decorators import background
from pacificpy.background.local import LocalExecutor
from pacificpy.background.monitor import (
    InMemoryMonitorStore,
    MonitorStore,
    RedisMonitorStore,
    configure_task_monitor,
)
from pacificpy.background.task import PROGRESS_MESSAGE_CHARS, TaskContext, TaskEnvelope
from pacificpy.errors import TaskFailed
from pacificpy.types import TaskStatus


@background
def report(done: Any, total: Any = None, message: Any = None) -> str:
    ctx = current_task()
    assert ctx is not None
    ctx.set_progress(done, total, message)
    return "reported"


#: Arguments JSON cannot carry to a task: made inside it.
SPECIAL = {"nan": (math.nan,), "inf total": (1, math.inf)}


@background
def report_special(case: str) -> str:
    ctx = current_task()
    assert ctx is not None
    ctx.set_progress(*SPECIAL[case])
    return "reported"


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("3",), TypeError, "done must be a number"),
        ((True,), TypeError, "done must be a number"),
        ((1, "10"), TypeError, "total must be a number"),
        ((-1,), ValueError, "must not be negative"),
        ((1, 0), ValueError, "total must be positive"),
        ((1, 2, 3), TypeError, "message must be a string"),
    ],
)
def test_bad_progress_fails_the_task_with_a_clear_error(
    executor: LocalExecutor, args: tuple[Any, ...], error: type[Exception], match: str
) -> None:
    handle = report.delay(*args)
    with pytest.raises(TaskFailed, match=match) as info:
        handle.result_sync(10)
    assert info.value.error_type == error.__name__
    assert handle.progress_sync() is None


@pytest.mark.parametrize("case", sorted(SPECIAL))
def test_non_finite_progress_is_refused(executor: LocalExecutor, case: str) -> None:
    handle = report_special.delay(case)
    with pytest.raises(TaskFailed, match="finite") as info:
        handle.result_sync(10)
    assert info.value.error_type == "ValueError"


def test_progress_is_kept_and_a_long_message_cut(executor: LocalExecutor) -> None:
    handle = report.delay(3, 4, "x" * 5000)
    assert handle.result_sync(10) == "reported"
    done, total, message = handle.progress_sync()  # type: ignore[misc]
    assert (done, total) == (3.0, 4.0)
    assert message == "x" * PROGRESS_MESSAGE_CHARS


def ctx_of(env: TaskEnvelope) -> TaskContext:
    return TaskContext(env.task_id, env.task_name, env.attempt, env.queue, env.enqueued_at, None)


@pytest.fixture
def redis_store(redis_url: str) -> Iterator[RedisMonitorStore]:
    prefix = "prog" + uuid.uuid4().hex[:8]
    store = RedisMonitorStore(redis_url, prefix=prefix)
    yield store
    store.clear()
    store.close()


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, redis_url: str) -> Iterator[MonitorStore]:
    if request.param == "memory":
        yield InMemoryMonitorStore()
        return
    yield request.getfixturevalue("redis_store")


def test_the_latest_progress_wins_within_a_batch(store: MonitorStore) -> None:
    env = TaskEnvelope(uuid.uuid4().hex, "t.report", enqueued_at=time.time())
    store.task_queued(env)
    store.task_running(env)
    for i in range(1, 101):
        store.task_progress(ctx_of(env), i, 100, f"item {i}")
    rec = store.get(env.task_id)
    assert rec is not None
    assert (rec.progress_done, rec.progress_total, rec.progress_message) == (100, 100, "item 100")
    assert rec.status is TaskStatus.RUNNING
    store.task_completed(env, "ok", 0.5)
    rec = store.get(env.task_id)
    assert rec is not None and rec.status is TaskStatus.COMPLETED
    assert rec.progress_done == 100


def test_cancelled_is_final_and_counted(store: MonitorStore) -> None:
    env = TaskEnvelope(uuid.uuid4().hex, "t.cancel_me", enqueued_at=time.time())
    store.task_queued(env)
    store.task_running(env)
    store.task_cancelled(env.task_id, "t.cancel_me")
    rec = store.get(env.task_id)
    assert rec is not None and rec.status is TaskStatus.CANCELLED
    assert rec.name == "t.cancel_me"
    assert store.metrics().totals[("t.cancel_me", "cancelled")] == 1


def test_redis_a_late_event_of_the_run_does_not_undo_cancelled(
    redis_store: RedisMonitorStore,
) -> None:
    env = TaskEnvelope(uuid.uuid4().hex, "t.late", enqueued_at=time.time())
    redis_store.task_queued(env)
    redis_store.task_running(env)
    redis_store.flush()
    redis_store.task_cancelled(env.task_id, "t.late")
    redis_store.flush()
    redis_store.task_running(env)  # a worker's event that arrives after the cancel
    redis_store.task_progress(ctx_of(env), 1, 2, "late")
    rec = redis_store.get(env.task_id)
    assert rec is not None and rec.status is TaskStatus.CANCELLED
    assert rec.progress_done is None


def test_redis_progress_is_seen_by_another_store(
    redis_store: RedisMonitorStore, redis_url: str
) -> None:
    """What another process (another store on the same Redis) reads."""
    env = TaskEnvelope(uuid.uuid4().hex, "t.shared", enqueued_at=time.time())
    redis_store.task_running(env)
    redis_store.task_progress(ctx_of(env), 2, 8, "two")
    redis_store.flush()
    other = RedisMonitorStore(redis_url, prefix=redis_store.prefix)
    try:
        rec = other.get(env.task_id)
        assert rec is not None
        assert (rec.progress_done, rec.progress_total, rec.progress_message) == (2, 8, "two")
    finally:
        other.close()
    client = redis.Redis.from_url(redis_url)
    try:
        fields = client.hgetall(f"{redis_store.prefix}:mon:t:{env.task_id}")
        assert fields[b"pdone"] == b"2.0" or fields[b"pdone"] == b"2"
    finally:
        client.close()


def test_configured_redis_store_serves_handle_progress(
    executor: LocalExecutor, redis_url: str
) -> None:
    prefix = "prog" + uuid.uuid4().hex[:8]
    monitor = configure_task_monitor(RedisMonitorStore(redis_url, prefix=prefix))
    try:
        handle = report.delay(5, 10, "half")
        assert handle.result_sync(10) == "reported"
        assert handle.progress_sync() == (5.0, 10.0, "half")
    finally:
        store = monitor.store
        assert isinstance(store, RedisMonitorStore)
        store.clear()
