"""The in-memory monitor: automatic tracking, hand reporting, queries, previews, retention."""

from __future__ import annotations

import bisect
import gc
import logging
import random
import threading
import time
import uuid
from typing import Any

import pytest

from pacificpy.background import Retry
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import LocalExecutor, get_local_executor
from pacificpy.background.monitor import (
    InMemoryMonitorStore,
    NullMonitorStore,
    TaskMonitor,
    configure_task_monitor,
    get_task_monitor,
    preview,
    preview_call,
    record_metric,
    record_task_start,
    reset_task_monitor,
    update_task_status,
)
from pacificpy.background.task import TaskEnvelope
from pacificpy.errors import TaskFailed
from pacificpy.types import TaskStatus
from tests.support.wait import wait_for


@background
def add(a: int, b: int) -> int:
    return a + b


@background
def explode(reason: str) -> None:
    raise ValueError(reason)


_flaky_calls: dict[str, int] = {}


@background(retries=2, retry_backoff=0.01, retry_jitter=False)
def flaky(key: str) -> str:
    _flaky_calls[key] = _flaky_calls.get(key, 0) + 1
    if _flaky_calls[key] == 1:
        raise Retry(countdown=0.01)
    return "ok"


@background
def login(user: str, password: str, options: dict[str, Any]) -> dict[str, str]:
    return {"user": user, "token": "s3cr3t-result-token"}


# -- the guide's "Task Monitoring" sample, as written (process_data supplied) ----------------
def process_data(data: dict) -> dict:
    if data.get("fail"):
        raise RuntimeError("bad data")
    return {"processed": data["value"]}


@background
def monitored_task(data: dict):
    task_id = str(uuid.uuid4())  # Or get from context
    record_task_start(task_id, "monitored_task")

    try:
        result = process_data(data)
        update_task_status(task_id, "completed", result)
        return result
    except Exception as e:
        update_task_status(task_id, "failed", str(e))
        raise


# -- the guide's "Metrics Collection" sample, as written --------------------------------------
@background
def timed_task(data: dict):
    start_time = time.time()

    try:
        result = process_data(data)
        duration = time.time() - start_time
        # Record metrics
        record_metric("task_duration", duration)
        return result
    except Exception as e:  # noqa: F841 - as the guide writes it
        duration = time.time() - start_time
        record_metric("task_failure_duration", duration)
        raise


def test_completed_task_is_tracked_through_its_states(executor: LocalExecutor) -> None:
    handle = add.delay(2, 3)
    assert handle.result_sync(5) == 5
    rec = wait_for(lambda: get_task_monitor().get(handle.id))
    assert rec.status is TaskStatus.COMPLETED
    assert rec.name == add.name
    assert rec.queue == "default"
    assert rec.attempts == 1
    assert rec.args_preview == "2, 3"
    assert rec.result_preview == "5"
    assert rec.error is None
    assert rec.duration is not None and rec.duration >= 0
    assert rec.enqueued_at is not None and rec.started_at is not None
    assert rec.enqueued_at <= rec.started_at <= rec.finished_at  # type: ignore[operator]
    assert rec.to_dict()["status"] == "completed"


def test_failed_task_keeps_error_and_traceback(executor: LocalExecutor) -> None:
    handle = explode.delay("kaboom")
    with pytest.raises(TaskFailed):
        handle.result_sync(5)
    rec = get_task_monitor().get(handle.id)
    assert rec is not None
    assert rec.status is TaskStatus.FAILED
    assert rec.error == "ValueError: kaboom"
    assert rec.traceback is not None and "ValueError: kaboom" in rec.traceback
    assert get_task_monitor().list(status="failed")[0].id == handle.id


def test_retrying_then_completed_counts_attempts(executor: LocalExecutor) -> None:
    key = uuid.uuid4().hex
    seen: list[TaskStatus] = []
    store = get_task_monitor().store
    original = store.task_retrying

    def spy(env: TaskEnvelope, error: str, delay: float) -> None:
        original(env, error, delay)
        rec = store.get(env.task_id)
        assert rec is not None
        seen.append(rec.status)

    get_task_monitor().task_retrying = spy
    handle = flaky.delay(key)
    assert handle.result_sync(5) == "ok"
    rec = get_task_monitor().get(handle.id)
    assert rec is not None
    assert seen == [TaskStatus.RETRYING]
    assert rec.status is TaskStatus.COMPLETED
    assert rec.attempts == 2
    assert rec.error is None
    assert get_task_monitor().metrics().totals[(flaky.name, "retrying")] == 1


def test_unknown_task_is_dead(executor: LocalExecutor) -> None:
    from pacificpy.background import _codec

    env = TaskEnvelope(task_id=uuid.uuid4().hex, task_name="nowhere.to_be_found")
    executor.submit_raw(_codec.encode(env, signing_key=None))
    rec = wait_for(
        lambda: (r := get_task_monitor().get(env.task_id)) and r.status is TaskStatus.DEAD and r
    )
    assert "nowhere.to_be_found" in (rec.error or "")


def test_abandoned_at_shutdown() -> None:
    ex = get_local_executor(max_workers=1, shutdown_timeout=0.05)
    configure_background_tasks(ex)
    release = threading.Event()

    @background(name="tests.monitor.blocker")
    def blocker() -> None:
        release.wait(10)

    running = blocker.delay()
    waiting = blocker.delay()
    wait_for(lambda: (r := get_task_monitor().get(running.id)) and r.status is TaskStatus.RUNNING)
    ex.shutdown_sync(timeout=0.05)
    release.set()
    assert get_task_monitor().get(running.id).status is TaskStatus.ABANDONED  # type: ignore[union-attr]
    assert get_task_monitor().get(waiting.id).status is TaskStatus.ABANDONED  # type: ignore[union-attr]


def test_guide_task_monitoring_sample_runs_as_written(executor: LocalExecutor) -> None:
    ok = monitored_task.delay({"value": 7})
    assert ok.result_sync(5) == {"processed": 7}
    bad = monitored_task.delay({"fail": True})
    with pytest.raises(TaskFailed):
        bad.result_sync(5)

    hand = get_task_monitor().list(name="monitored_task")
    assert {r.status for r in hand} == {TaskStatus.COMPLETED, TaskStatus.FAILED}
    done = next(r for r in hand if r.status is TaskStatus.COMPLETED)
    assert done.result_preview == "{'processed': 7}"
    assert done.attempts == 1 and done.duration is not None
    failed = next(r for r in hand if r.status is TaskStatus.FAILED)
    assert failed.error == "bad data"
    # ... and the automatic records of the same runs, under the task's full name.
    assert get_task_monitor().get(ok.id).status is TaskStatus.COMPLETED  # type: ignore[union-attr]
    assert get_task_monitor().get(bad.id).status is TaskStatus.FAILED  # type: ignore[union-attr]


def test_guide_metrics_collection_sample_runs_as_written(executor: LocalExecutor) -> None:
    assert timed_task.delay({"value": 1}).result_sync(5) == {"processed": 1}
    assert timed_task.delay({"value": 2}).result_sync(5) == {"processed": 2}
    with pytest.raises(TaskFailed):
        timed_task.delay({"fail": True}).result_sync(5)
    user = get_task_monitor().metrics().user
    count, total, _last = user[("task_duration", ())]
    assert count == 2 and total >= 0
    assert user[("task_failure_duration", ())][0] == 1


def test_record_metric_labels() -> None:
    record_metric("hits", 1, route="/a")
    record_metric("hits", 2, route="/a")
    record_metric("hits", 5, route="/b")
    user = get_task_monitor().metrics().user
    assert user[("hits", (("route", "/a"),))] == (2, 3.0, 2.0)
    assert user[("hits", (("route", "/b"),))] == (1, 5.0, 5.0)


def test_hand_reported_states() -> None:
    record_task_start("job-1", "report")
    rec = get_task_monitor().get("job-1")
    assert rec is not None and rec.status is TaskStatus.RUNNING and rec.attempts == 1
    update_task_status("job-1", "RETRYING", "flaky network")
    assert get_task_monitor().get("job-1").error == "flaky network"  # type: ignore[union-attr]
    record_task_start("job-1", "report")
    update_task_status("job-1", TaskStatus.COMPLETED, {"rows": 3})
    rec = get_task_monitor().get("job-1")
    assert rec is not None
    assert rec.status is TaskStatus.COMPLETED and rec.attempts == 2
    assert rec.result_preview == "{'rows': 3}"
    assert rec.duration is not None and rec.finished_at is not None
    with pytest.raises(ValueError, match="unknown task status"):
        update_task_status("job-1", "exploded")


def test_list_filters_orders_and_limits() -> None:
    for i in range(5):
        record_task_start(f"t{i}", "even" if i % 2 == 0 else "odd")
        time.sleep(0.002)  # distinct update times; not synchronisation
    update_task_status("t1", "failed", "nope")
    mon = get_task_monitor()
    assert [r.id for r in mon.list()] == ["t1", "t4", "t3", "t2", "t0"]
    assert [r.id for r in mon.list(name="even")] == ["t4", "t2", "t0"]
    assert [r.id for r in mon.list(status="running", limit=2)] == ["t4", "t3"]
    assert [r.id for r in mon.list(status=TaskStatus.FAILED)] == ["t1"]


def test_stats_counts_quantiles_and_throughput(executor: LocalExecutor) -> None:
    handles = [add.delay(i, i) for i in range(20)]
    for h in handles:
        h.result_sync(5)
    with pytest.raises(TaskFailed):
        explode.delay("x").result_sync(5)
    stats = get_task_monitor().stats()
    assert stats["counts"]["completed"] == 20
    assert stats["counts"]["failed"] == 1
    assert stats["total"] == 21
    per = stats["tasks"][add.name]
    assert per["count"] == 20 and per["counts"] == {"completed": 20}
    assert 0 <= per["p50"] <= per["p95"]
    assert per["throughput"] == pytest.approx(20 / stats["window"])
    assert stats["throughput"] == pytest.approx(21 / stats["window"])
    assert stats["tasks"][explode.name]["counts"] == {"failed": 1}


def test_previews_redact_secrets_and_stay_short(executor: LocalExecutor) -> None:
    handle = login.delay(
        "ann", password="hunter2", options={"api_key": "k-123", "Authorization": "Bearer x"}
    )
    handle.result_sync(5)
    rec = get_task_monitor().get(handle.id)
    assert rec is not None and rec.args_preview is not None
    assert "hunter2" not in rec.args_preview and "k-123" not in rec.args_preview
    assert "Bearer x" not in rec.args_preview
    assert rec.args_preview.startswith("'ann', password='***'")
    assert "s3cr3t" not in (rec.result_preview or "")

    huge = ["x" * 1000] * 10_000
    text = preview_call((huge,), {"data": {"k": "v" * 10_000}})
    assert len(text) <= 200 and text.endswith("…")
    assert len(preview("y" * 1_000_000)) <= 200
    assert preview((1,)) == "(1,)"
    assert preview({"secret": 1, "nested": [{"token": "abc"}]}) == (
        "{'secret': '***', 'nested': [{'token': '***'}]}"
    )


def test_delay_does_not_render_arguments() -> None:
    class Loud:
        renders = 0

        def __repr__(self) -> str:
            Loud.renders += 1
            return "<Loud>"

    mon = TaskMonitor(InMemoryMonitorStore())
    env = TaskEnvelope(task_id="a", task_name="n", args=(Loud(),), enqueued_at=time.time())
    mon.task_queued(env)
    mon.task_running(env)
    mon.task_completed(env, Loud(), 0.01)
    assert Loud.renders == 0
    rec = mon.get("a")
    assert rec is not None and rec.args_preview == "<Loud>" and rec.result_preview == "<Loud>"
    mon.get("a")
    assert Loud.renders == 2  # rendered once each, then kept


def test_retention_is_bounded() -> None:
    store = InMemoryMonitorStore(max_records=100)
    mon = configure_task_monitor(store)
    now = time.time()
    for i in range(1000):
        env = TaskEnvelope(task_id=f"id{i}", task_name="n", enqueued_at=now)
        mon.task_queued(env)
        mon.task_running(env)
        mon.task_completed(env, i, 0.001)
    assert 100 <= len(store._records) <= 101
    assert mon.get("id0") is None
    assert mon.get("id999") is not None
    assert mon.metrics().totals[("n", "completed")] == 1000  # counters are cumulative


def test_counters_are_exact_under_threads() -> None:
    mon = configure_task_monitor()
    now = time.time()

    def work(t: int) -> None:
        for i in range(2000):
            env = TaskEnvelope(task_id=f"{t}-{i}", task_name="n", enqueued_at=now)
            mon.task_queued(env)
            mon.task_completed(env, None, 0.02)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = mon.metrics()
    assert snap.totals[("n", "queued")] == 8000
    assert snap.totals[("n", "completed")] == 8000
    buckets, total, count = snap.durations["n"]
    assert count == 8000 and sum(buckets) == 8000
    assert total == pytest.approx(160.0)


def test_monitor_off_records_nothing_but_tasks_run(executor: LocalExecutor) -> None:
    mon = configure_task_monitor(enabled=False)
    assert isinstance(mon.store, NullMonitorStore) and not mon.enabled
    handle = add.delay(1, 1)
    assert handle.result_sync(5) == 2
    record_task_start("x", "y")
    record_metric("m", 1)
    assert mon.get(handle.id) is None and mon.get("x") is None
    assert mon.list() == []
    assert mon.stats()["total"] == 0
    assert mon.metrics().totals == {}


def test_configure_installs_a_fresh_store() -> None:
    first = configure_task_monitor()
    record_task_start("a", "n")
    second = configure_task_monitor()
    assert second is get_task_monitor() and second is not first
    assert second.get("a") is None
    with pytest.raises(ValueError, match="not both"):
        configure_task_monitor(InMemoryMonitorStore(), redis_url="redis://127.0.0.1:1/0")
    reset_task_monitor()
    assert get_task_monitor() is not second


def test_a_broken_store_never_breaks_a_task(
    executor: LocalExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(InMemoryMonitorStore):
        def task_running(self, env: TaskEnvelope) -> None:
            raise RuntimeError("monitor down")

    configure_task_monitor(Broken())
    assert add.delay(3, 4).result_sync(5) == 7
    assert "task monitor failed on task_running" in caplog.text


def test_eviction_is_safe_while_a_worker_records(caplog: pytest.LogCaptureFixture) -> None:
    """A producer and a worker thread record at once while the store evicts all the time."""
    from pacificpy.background.decorators import background, configure_background_tasks
    from pacificpy.background.local import get_local_executor
    from pacificpy.background.monitor import configure_task_monitor

    monitor = configure_task_monitor(max_records=100)
    executor = get_local_executor(1, max_queue_size=100_000)
    configure_background_tasks(executor)

    @background(name="tests.monitor.evict_noop")
    def noop(i: int) -> int:
        return i

    with caplog.at_level(logging.ERROR, logger="pacificpy"):
        for i in range(60_000):
            noop.delay(i)
        assert executor.join(timeout=60)
    executor.shutdown_sync(timeout=5)
    failures = [r for r in caplog.records if "task monitor failed" in r.getMessage()]
    assert failures == []
    assert len(monitor.list(limit=1000)) <= 102
    assert monitor.stats()["counts"]["completed"] >= 1


def known_durations(mon: TaskMonitor, name: str) -> None:
    """Tasks of ``name`` with durations 1..100 ms, recorded in a shuffled order."""
    order = list(range(1, 101))
    random.Random(7).shuffle(order)
    now = time.time()
    for ms in order:
        env = TaskEnvelope(task_id=f"{name}-{ms}", task_name=name, enqueued_at=now)
        mon.task_queued(env)
        mon.task_running(env)
        mon.task_completed(env, None, ms / 1000)


def test_stats_quantiles_on_known_durations() -> None:
    mon = TaskMonitor(InMemoryMonitorStore())
    known_durations(mon, "q.task")
    per = mon.stats()["tasks"]["q.task"]
    # Nearest rank over the 100 sorted durations: index round(q * 99).
    assert per["p50"] == 0.051  # index round(49.5) = 50
    assert per["p95"] == 0.095  # index round(94.05) = 94
    assert per["count"] == 100


def test_histogram_buckets_hold_their_upper_bound_across_batches() -> None:
    """Completions are counted in batches: a duration equal to a bucket's bound is in that
    bucket (``le``), one just above it in the next, before and after a batch is folded."""
    from pacificpy.background.monitor.store import DURATION_BUCKETS

    mon = TaskMonitor(InMemoryMonitorStore(max_records=10))
    durations = list(DURATION_BUCKETS) + [b * 1.0001 for b in DURATION_BUCKETS] + [0.0]
    expected = [0] * (len(DURATION_BUCKETS) + 1)
    for i in range(3000):  # past the batch size: folded on the hot path too
        duration = durations[i % len(durations)]
        expected[bisect.bisect_left(DURATION_BUCKETS, duration)] += 1
        env = TaskEnvelope(task_id=f"h{i}", task_name="h", enqueued_at=time.time())
        mon.task_queued(env)
        mon.task_completed(env, None, duration)
    buckets, total, count = mon.metrics().durations["h"]
    assert buckets == expected and count == 3000
    assert total == pytest.approx(sum(durations[i % len(durations)] for i in range(3000)))
    assert mon.metrics().totals[("h", "queued")] == 3000


def test_kept_records_are_not_tracked_by_the_garbage_collector() -> None:
    """A record holds only atomic values and the call's own arguments, so once collected it
    is untracked and costs later collections nothing (an envelope or an enum kept in it
    would keep it tracked forever)."""
    store = InMemoryMonitorStore()
    mon = TaskMonitor(store)
    for i in range(50):
        env = TaskEnvelope(task_id=f"g{i}", task_name="g", args=(i, "x"), enqueued_at=time.time())
        mon.task_queued(env)
        mon.task_running(env)
        mon.task_completed(env, i, 0.01)
    gc.collect()
    gc.collect()  # a tuple is untracked once the tuples it holds were
    assert not any(gc.is_tracked(rec) for rec in store._records.values())
    rec = mon.get("g7")
    assert rec is not None and rec.args_preview == "7, 'x'" and rec.result_preview == "7"
    assert rec.status is TaskStatus.COMPLETED and rec.queue == "default"
