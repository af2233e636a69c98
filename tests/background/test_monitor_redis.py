"""The Redis monitor store: shared across real processes, ordered, bounded, never in the way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import get_local_executor
from pacificpy.background.monitor import (
    TaskMonitor,
    configure_task_monitor,
    get_task_monitor,
    record_metric,
    record_task_start,
    update_task_status,
)
from pacificpy.background.monitor.previews import ERROR_CHARS, TRACEBACK_CHARS
from pacificpy.background.monitor.redis import RedisMonitorStore
from pacificpy.background.task import TaskEnvelope
from pacificpy.errors import TaskFailed
from pacificpy.types import TaskStatus
from tests.background.test_monitor import known_durations
from tests.support.net import free_port
from tests.support.uvicorn_server import REPO_ROOT

pytestmark = pytest.mark.redis

# A separate process: runs two tasks on its local executor with the Redis monitor store.
CHILD = textwrap.dedent(
    """
    import json, os, sys
    from pacificpy.background.decorators import background, configure_background_tasks
    from pacificpy.background.local import get_local_executor
    from pacificpy.background.monitor import configure_task_monitor, get_task_monitor
    from pacificpy.background.monitor.redis import RedisMonitorStore

    configure_task_monitor(RedisMonitorStore(os.environ["URL"], prefix=os.environ["PREFIX"]))
    executor = get_local_executor(max_workers=2)
    configure_background_tasks(executor)

    @background(name="child.square")
    def square(x):
        return {"square": x * x}

    @background(name="child.boom")
    def boom(password):
        raise KeyError("missing thing")

    ok = square.delay(12)
    bad = boom.delay(password="hunter2")
    ok.result_sync(10)
    try:
        bad.result_sync(10)
    except Exception:
        pass
    executor.shutdown_sync(timeout=5)
    # No close(): the store writes what is still buffered at interpreter exit.
    print(json.dumps({"ok": ok.id, "bad": bad.id, "pid": os.getpid()}))
    """
)


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = "mt" + uuid.uuid4().hex[:10]
    yield name
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{name}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def store_for(url: str, prefix: str, **kwargs: object) -> RedisMonitorStore:
    return RedisMonitorStore(url, prefix=prefix, **kwargs)  # type: ignore[arg-type]


def test_a_task_run_in_another_process_is_visible_with_its_final_state(
    redis_url: str, prefix: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD],
        env={
            **os.environ,
            "URL": redis_url,
            "PREFIX": prefix,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
            ),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    ids = json.loads(proc.stdout.strip().splitlines()[-1])
    assert ids["pid"] != os.getpid()

    monitor = configure_task_monitor(store_for(redis_url, prefix))
    ok = monitor.get(ids["ok"])
    assert ok is not None
    assert ok.status is TaskStatus.COMPLETED
    assert ok.name == "child.square" and ok.attempts == 1
    assert ok.args_preview == "12" and ok.result_preview == "{'square': 144}"
    assert ok.duration is not None and ok.finished_at is not None and ok.enqueued_at
    bad = monitor.get(ids["bad"])
    assert bad is not None
    assert bad.status is TaskStatus.FAILED
    assert bad.error == "KeyError: 'missing thing'"
    assert bad.traceback and "KeyError" in bad.traceback
    assert bad.args_preview == "password='***'"

    assert [r.id for r in monitor.list(status="failed")] == [ids["bad"]]
    assert {r.id for r in monitor.list()} == {ids["ok"], ids["bad"]}
    stats = monitor.stats()
    assert stats["counts"]["completed"] == 1 and stats["counts"]["failed"] == 1
    assert stats["tasks"]["child.square"]["p50"] == ok.duration
    snap = monitor.metrics()
    assert snap.totals[("child.square", "queued")] == 1
    assert snap.totals[("child.square", "completed")] == 1
    assert snap.totals[("child.boom", "failed")] == 1
    assert snap.durations["child.square"][2] == 1
    assert snap.queues == {"default"}


@background(name="tests.monitor_redis.double")
def double(x: int) -> int:
    return 2 * x


def test_in_process_tasks_and_hand_reports(redis_url: str, prefix: str) -> None:
    configure_task_monitor(store_for(redis_url, prefix))
    ex = get_local_executor(max_workers=2)
    configure_background_tasks(ex)
    try:
        handle = double.delay(21)
        assert handle.result_sync(5) == 42
        rec = get_task_monitor().get(handle.id)  # reads flush this process's buffer first
        assert rec is not None and rec.status is TaskStatus.COMPLETED
        assert handle.status_sync() is TaskStatus.COMPLETED
    finally:
        ex.shutdown_sync(timeout=5)

    record_task_start("hand-1", "monitored_task")
    update_task_status("hand-1", "completed", {"rows": 2})
    rec = get_task_monitor().get("hand-1")
    assert rec is not None
    assert rec.status is TaskStatus.COMPLETED and rec.attempts == 1
    assert rec.result_preview == "{'rows': 2}" and rec.name == "monitored_task"
    assert rec.duration is not None and rec.duration >= 0
    record_task_start("hand-1", "monitored_task")
    update_task_status("hand-1", "failed", "broke")
    rec = get_task_monitor().get("hand-1")
    assert rec is not None and rec.attempts == 2 and rec.error == "broke"

    record_metric("task_duration", 0.25)
    record_metric("task_duration", 0.75)
    record_metric("hits", 1, route="/x")
    user = get_task_monitor().metrics().user
    assert user[("task_duration", ())] == (2, 1.0, 0.75)
    assert user[("hits", (("route", "/x"),))] == (1, 1.0, 1.0)


def test_late_events_from_another_process_do_not_overwrite_newer_ones(
    redis_url: str, prefix: str
) -> None:
    worker = TaskMonitor(store_for(redis_url, prefix))
    web = TaskMonitor(store_for(redis_url, prefix))
    env = TaskEnvelope(task_id="t1", task_name="n", args=(1,), enqueued_at=time.time())
    # The worker finished before the web process's "queued" reached Redis.
    worker.task_running(env)
    worker.task_completed(env, "done", 0.5)
    worker.flush()
    web.task_queued(env)
    web.flush()
    rec = web.get("t1")
    assert rec is not None and rec.status is TaskStatus.COMPLETED
    assert rec.result_preview == "'done'"
    assert web.metrics().totals[("n", "queued")] == 1  # still counted

    # A requeued dead letter starts a new life: its events win over the old record.
    later = env.fresh()
    assert later.enqueued_at > env.enqueued_at
    web.task_queued(later)
    rec = web.get("t1")
    assert rec is not None and rec.status is TaskStatus.QUEUED
    assert rec.result_preview is None and rec.finished_at is None
    assert rec.name == "n"  # the old record's name went with it; the new life writes its own
    worker.task_dead("t1", "n", "poison")
    worker.flush()
    assert web.get("t1").status is TaskStatus.DEAD  # type: ignore[union-attr]
    worker.close()
    web.close()


def test_retention_trims_records(redis_url: str, prefix: str) -> None:
    monitor = TaskMonitor(store_for(redis_url, prefix, max_records=50))
    now = time.time()
    for i in range(300):
        env = TaskEnvelope(task_id=f"id{i}", task_name="n", enqueued_at=now)
        monitor.task_queued(env)
        monitor.task_completed(env, i, 0.01)
    monitor.flush()
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.zcard(f"{prefix}:mon:index") <= 50
        hashes = list(client.scan_iter(match=f"{prefix}:mon:t:*", count=1000))
        assert len(hashes) <= 50
        assert 0 < client.ttl(hashes[0]) <= 86_400
    finally:
        client.close()
    assert monitor.get("id299") is not None and monitor.get("id0") is None
    assert len(monitor.list(limit=1000)) <= 50
    assert monitor.metrics().totals[("n", "completed")] == 300
    monitor.close()


def test_script_cache_loss_is_survived(redis_url: str, prefix: str) -> None:
    monitor = TaskMonitor(store_for(redis_url, prefix))
    record = monitor.record_start
    record("a", "n")
    monitor.flush()
    client = redis.Redis.from_url(redis_url)
    try:
        client.script_flush()
    finally:
        client.close()
    record("b", "n")
    assert monitor.get("b") is not None
    monitor.close()


def test_unreachable_redis_never_breaks_tasks(caplog: pytest.LogCaptureFixture) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    configure_task_monitor(redis_url=url)
    ex = get_local_executor(max_workers=1)
    configure_background_tasks(ex)
    try:
        assert double.delay(5).result_sync(5) == 10
    finally:
        ex.shutdown_sync(timeout=5)
    get_task_monitor().flush()
    assert "could not write" in caplog.text


def test_buffer_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    store = RedisMonitorStore(f"redis://127.0.0.1:{free_port()}/0", max_buffer=10)
    store._start = lambda: None  # type: ignore[method-assign]  # no flusher: fill the buffer
    for i in range(25):
        store.record_start(f"x{i}", "n")
    assert len(store._buf) <= 11
    assert "buffer full" in caplog.text


@background(name="tests.monitor_redis.login")
def login(user: str, password: str) -> str:
    return f"welcome {user}"


@background(name="tests.monitor_redis.huge_failure")
def huge_failure() -> None:
    raise ValueError("x" * (5 * 1024 * 1024))


def test_a_secret_passed_positionally_never_reaches_redis(redis_url: str, prefix: str) -> None:
    monitor = configure_task_monitor(store_for(redis_url, prefix))
    ex = get_local_executor(max_workers=1)
    configure_background_tasks(ex)
    try:
        handle = login.delay("bob", "hunter2")
        assert handle.result_sync(5) == "welcome bob"
    finally:
        ex.shutdown_sync(timeout=5)
    monitor.flush()
    client = redis.Redis.from_url(redis_url)
    try:
        stored = client.hgetall(f"{prefix}:mon:t:{handle.id}")
    finally:
        client.close()
    assert stored[b"args"] == b"'bob', '***'"
    assert not any(b"hunter2" in value for value in stored.values())
    assert monitor.get(handle.id).args_preview == "'bob', '***'"  # type: ignore[union-attr]


def test_a_5mb_error_costs_kilobytes_in_redis(redis_url: str, prefix: str) -> None:
    monitor = configure_task_monitor(store_for(redis_url, prefix))
    ex = get_local_executor(max_workers=1)
    configure_background_tasks(ex)
    try:
        handle = huge_failure.delay()
        with pytest.raises(TaskFailed):
            handle.result_sync(30)
    finally:
        ex.shutdown_sync(timeout=5)
    monitor.flush()
    client = redis.Redis.from_url(redis_url)
    try:
        key = f"{prefix}:mon:t:{handle.id}"
        used = client.memory_usage(key)
        error_len = client.hstrlen(key, "error")
        trace_len = client.hstrlen(key, "traceback")
    finally:
        client.close()
    assert used is not None and used < 64 * 1024  # was about 10 MB
    # Lengths in UTF-8 bytes: the "…" of each cut marker is 3 bytes.
    assert 0 < error_len <= ERROR_CHARS + 2 and 0 < trace_len <= TRACEBACK_CHARS + 8
    rec = monitor.get(handle.id)
    assert rec is not None and rec.traceback is not None
    assert "in huge_failure" in rec.traceback and 'raise ValueError("x"' in rec.traceback


def test_stats_quantiles_on_known_durations(redis_url: str, prefix: str) -> None:
    monitor = TaskMonitor(store_for(redis_url, prefix))
    known_durations(monitor, "q.task")
    per = monitor.stats()["tasks"]["q.task"]
    assert per["p50"] == 0.051 and per["p95"] == 0.095  # nearest rank, index round(q * 99)
    assert per["count"] == 100
    monitor.close()


def test_fields_are_written_as_python_writes_floats(redis_url: str, prefix: str) -> None:
    """The batch goes to Lua as JSON of strings: times and durations keep every digit, in
    ``repr``'s spelling (tiny durations too)."""
    store = store_for(redis_url, prefix)
    env = TaskEnvelope(task_id="f1", task_name="n", args=(1,), enqueued_at=1796073466.6233578)
    store.task_queued(env)
    store.task_running(env)
    store.task_completed(env, 2, 1.160200008598622e-05)
    store.flush()
    raw = store.client.hgetall(f"{prefix}:mon:t:f1")
    assert raw[b"enqueued_at"] == b"1796073466.6233578" and raw[b"ep"] == b"1796073466.6233578"
    assert raw[b"duration"] == b"1.160200008598622e-05"
    assert raw[b"attempts"] == b"1" and raw[b"result"] == b"2" and raw[b"args"] == b"1"
    updated = float(raw[b"updated_at"])
    assert raw[b"updated_at"] == repr(updated).encode() == raw[b"finished_at"]
    assert store.client.zscore(f"{prefix}:mon:index", "f1") == updated
    # HINCRBYFLOAT keeps the sum in its own precision, as it always did.
    assert store.metrics().durations["n"][1] == pytest.approx(1.160200008598622e-05)
    store.close()


def test_one_failing_event_does_not_lose_the_rest_of_its_batch(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = store_for(redis_url, prefix)
    store.client.set(f"{prefix}:mon:t:bad", "not a hash")  # its writes fail: WRONGTYPE
    now = time.time()
    for task_id in ("a", "bad", "b"):
        env = TaskEnvelope(task_id=task_id, task_name="n", enqueued_at=now)
        store.task_queued(env)
        store.task_completed(env, None, 0.5)
    store.flush()
    assert "1 of 3 events could not be written" in caplog.text
    assert store.get("a").status is TaskStatus.COMPLETED  # type: ignore[union-attr]
    assert store.get("b").status is TaskStatus.COMPLETED  # type: ignore[union-attr]
    assert store.metrics().totals[("n", "completed")] == 3  # the counters are the batch's
    store.close()


def test_text_that_is_not_valid_unicode_is_still_written(redis_url: str, prefix: str) -> None:
    store = store_for(redis_url, prefix)
    env = TaskEnvelope(task_id="s1", task_name="n", enqueued_at=time.time())
    store.task_queued(env)
    store.task_failed(env, "bad \ud800 text", None, 0.1)
    store.flush()
    rec = store.get("s1")
    assert rec is not None and rec.status is TaskStatus.FAILED
    assert rec.error is not None and rec.error.startswith("bad ") and rec.error.endswith(" text")
    store.close()


def test_a_tasks_events_fold_into_one_write_across_a_window_of_many_batches(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One worker behind a fast producer: 1,200 enqueues, then the 1,200 runs. A task's
    # completion comes 1,200 events after its enqueue, farther apart than one call's 500
    # writes; folding over the whole window still writes each task once.
    store = store_for(redis_url, prefix)
    writes_per_call: list[int] = []
    real_script = store._clients.script

    def spying(name: str) -> Any:
        script = real_script(name)
        if name != "monitor_event":
            return script

        def call(keys: list[str], args: list[Any]) -> Any:
            writes_per_call.append(len(json.loads(args[2])["e"]))
            return script(keys, args)

        return call

    monkeypatch.setattr(store._clients, "script", spying)
    now = time.time()
    envs = [TaskEnvelope(task_id=f"w{i}", task_name="n", enqueued_at=now) for i in range(1200)]
    with store._flush_lock:  # the flusher thread waits: all 3,600 events make one window
        for env in envs:
            store.task_queued(env)
        for env in envs:
            store.task_running(env)
            store.task_completed(env, None, 0.25)
    store.flush()
    assert writes_per_call == [500, 500, 200]
    for task_id in ("w0", "w699", "w1199"):
        rec = store.get(task_id)
        assert rec is not None and rec.status is TaskStatus.COMPLETED and rec.name == "n"
        assert rec.enqueued_at == now and rec.started_at is not None
    totals = store.metrics().totals  # counted once, though sent with the first call only
    assert totals[("n", "queued")] == 1200 and totals[("n", "completed")] == 1200
    store.close()
