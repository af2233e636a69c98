"""The local executor: call-site errors, queue limits, queue length, chains, timeouts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pacificpy.background import _codec, current_task
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import LocalExecutor, get_local_executor
from pacificpy.background.monitor import get_task_monitor
from pacificpy.background.task import TaskEnvelope
from pacificpy.errors import (
    EnqueueError,
    QueueFull,
    TaskArgumentError,
    TaskFailed,
    TaskSerializationError,
    TaskTimeout,
)
from pacificpy.types import TaskStatus

KEY = b"test-local-signing-key-0123456789"
gate = threading.Event()


@background
def add(a: int, b: int = 0) -> int:
    return a + b


@background
def wait_gate() -> str:
    assert gate.wait(timeout=30)
    return "opened"


class Point:
    def __init__(self, x: int) -> None:
        self.x = x


@background(serializer="pickle")
def point_x(p: Point) -> int:
    return p.x


@background
def chain_head(n: int) -> str:
    return chain_tail.delay(n + 1).id  # sync task on a worker thread: no await


@background
def chain_tail(n: int) -> dict[str, Any]:
    ctx = current_task()
    assert ctx is not None
    return {"n": n, "parent_id": ctx.parent_id, "id": ctx.id}


@background
async def async_chain_head(n: int) -> str:
    handle = await chain_tail.delay(n + 1)
    return handle.id


@background(timeout=0.2)
def overruns(release: float) -> str:
    time.sleep(release)
    return "late"


@background(retries=1, retry_backoff=0.3, retry_jitter=False)
def fails_first(log: str) -> str:
    ctx = current_task()
    assert ctx is not None
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails")
    return "second"


events: list[str] = []


@background
def note(label: str) -> str:
    events.append(label)
    return label


@pytest.fixture
def executor() -> Iterator[LocalExecutor]:
    gate.clear()
    ex = get_local_executor(max_workers=1, max_queue_size=3)
    configure_background_tasks(ex, signing_key=KEY)
    yield ex
    gate.set()
    ex.shutdown_sync(timeout=5)


def _wait_running(ex: LocalExecutor, task_id: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while ex.get_status_sync(task_id) is not TaskStatus.RUNNING:
        assert time.monotonic() < deadline, "task never started"
        time.sleep(0.005)


# -- bad input at the call site -------------------------------------------------------------------
def test_arguments_that_do_not_bind(executor: LocalExecutor) -> None:
    with pytest.raises(TaskArgumentError, match="add"):
        add.delay(1, 2, 3)  # type: ignore[call-arg]
    with pytest.raises(TaskArgumentError, match="c"):
        add.delay(1, c=2)  # type: ignore[call-arg]
    with pytest.raises(TaskArgumentError):
        add.apply_async(args=())
    assert executor.queue_length_sync() == 0


def test_argument_json_cannot_carry_is_named(executor: LocalExecutor) -> None:
    with pytest.raises(TaskSerializationError, match=r"argument b .*set") as info:
        add.delay(1, {1, 2})  # type: ignore[arg-type]
    assert info.value.argument == "b"
    with pytest.raises(TaskSerializationError, match="argument b") as info:
        add.delay(1, b=Point(1))  # type: ignore[arg-type]
    assert info.value.argument == "b"


def test_full_queue_raises_queue_full(executor: LocalExecutor) -> None:
    blocker = wait_gate.delay()
    _wait_running(executor, blocker.id)  # the only worker is busy
    queued = [add.delay(i) for i in range(3)]
    assert executor.queue_length_sync() == 3
    with pytest.raises(QueueFull, match="max_queue_size=3"):
        add.delay(99)
    assert isinstance(QueueFull("x"), EnqueueError)
    gate.set()
    assert [h.result_sync(timeout=10) for h in queued] == [0, 1, 2]
    assert add.delay(5).result_sync(timeout=10) == 5  # room again


def test_pickled_task_refused_without_allow_pickle(executor: LocalExecutor) -> None:
    with pytest.raises(TaskSerializationError, match="allow_pickle=True"):
        point_x.delay(Point(3))


def test_pickled_task_runs_with_allow_pickle() -> None:
    ex = get_local_executor(max_workers=1, allow_pickle=True)
    configure_background_tasks(ex, signing_key=KEY)
    try:
        assert point_x.delay(Point(3)).result_sync(timeout=10) == 3
    finally:
        ex.shutdown_sync(timeout=5)


def test_tampered_message_is_dead_lettered_and_executor_survives(
    executor: LocalExecutor,
) -> None:
    env = TaskEnvelope(task_id="tampered-1", task_name=add.name, args=(1, 2))
    data = _codec.encode(env, signing_key=KEY).replace(b"[1,2]", b"[1,9]")
    executor.submit_raw(data)
    with pytest.raises(TaskFailed, match="signature"):
        executor.wait_result_sync("tampered-1", timeout=10).unwrap("tampered-1")
    (letter,) = executor.dead_letters_sync()
    assert letter.reason == "rejected" and letter.task_id == "tampered-1"
    assert not letter.requeueable
    assert add.delay(2, 3).result_sync(timeout=10) == 5  # worker unharmed


def test_enqueue_after_shutdown_is_refused() -> None:
    ex = get_local_executor(max_workers=1)
    configure_background_tasks(ex)
    ex.shutdown_sync(timeout=1)
    with pytest.raises(EnqueueError, match="shutting down"):
        add.delay(1)


# -- queues ---------------------------------------------------------------------------------------
def test_queue_length_counts_ready_and_delayed(executor: LocalExecutor) -> None:
    blocker = wait_gate.delay()
    _wait_running(executor, blocker.id)
    add.delay(1)
    add.apply_async((2,), countdown=30)
    add.apply_async((3,), queue="other")
    assert executor.queue_length_sync() == 2  # one ready + one waiting out its countdown
    assert executor.queue_length_sync("other") == 1
    assert executor.queue_length_sync("nobody") == 0


async def test_queue_length_async_and_helper(executor: LocalExecutor) -> None:
    from pacificpy.background import get_queue_length

    assert await executor.queue_length() == 0
    assert get_queue_length() == 0


def test_retry_wait_holds_no_worker(executor: LocalExecutor) -> None:
    events.clear()
    first = fails_first.delay("x")
    deadline = time.monotonic() + 10
    while get_task_monitor().get(first.id).status is not TaskStatus.RETRYING:  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.005)
    # The single worker is free during the 0.3 s backoff: another task runs meanwhile.
    assert note.delay("meanwhile").result_sync(timeout=10) == "meanwhile"
    assert first.status_sync() is not TaskStatus.COMPLETED
    assert first.result_sync(timeout=10) == "second"


# -- chains ---------------------------------------------------------------------------------------
def test_sync_task_chains_without_await_and_links_parent() -> None:
    ex = get_local_executor(max_workers=2)
    configure_background_tasks(ex)
    try:
        head = chain_head.delay(1)
        tail_id = head.result_sync(timeout=10)
        tail = ex.wait_result_sync(tail_id, timeout=10)
        assert tail.value == {"n": 2, "parent_id": head.id, "id": tail_id}
    finally:
        ex.shutdown_sync(timeout=5)


async def test_async_task_chains_and_links_parent() -> None:
    ex = get_local_executor(max_workers=2)
    configure_background_tasks(ex)
    try:
        head = await async_chain_head.delay(1)
        tail_id = await head.result(timeout=10)
        tail = await ex.wait_result(tail_id, timeout=10)
        assert tail.value["parent_id"] == head.id
    finally:
        ex.shutdown_sync(timeout=5)


def test_current_task_outside_a_task_is_none() -> None:
    assert current_task() is None


# -- timeouts -------------------------------------------------------------------------------------
def test_sync_timeout_fails_and_replaces_the_worker() -> None:
    ex = get_local_executor(max_workers=1)
    configure_background_tasks(ex)
    try:
        slow = overruns.delay(1.0)
        with pytest.raises(TaskTimeout):
            slow.result_sync(timeout=10)
        # The overrunning thread cannot be killed, but a replacement serves the queue.
        assert add.delay(1, 1).result_sync(timeout=0.9) == 2
        assert slow.status_sync() is TaskStatus.FAILED
        (letter,) = ex.dead_letters_sync()
        assert letter.reason == "timeout"
        assert ex.join(timeout=10)
    finally:
        ex.shutdown_sync(timeout=5)


def test_join_times_out_while_busy(executor: LocalExecutor) -> None:
    wait_gate.delay()
    assert executor.join(timeout=0.05) is False
    gate.set()
    assert executor.join(timeout=10) is True


def test_get_local_executor_returns_new_configured_executors() -> None:
    a = get_local_executor(2, max_queue_size=5, shutdown_timeout=1.5, allow_pickle=True)
    b = get_local_executor(2)
    assert a is not b
    assert (a.max_workers, a.max_queue_size, a.shutdown_timeout, a.allow_pickle) == (
        2, 5, 1.5, True,
    )  # fmt: skip
    assert b.max_queue_size == 10_000 and b.shutdown_timeout == 30.0 and not b.allow_pickle
    with pytest.raises(ValueError):
        get_local_executor(0)
