"""Faults, batch by batch, with counts: nothing sent is lost.

* a worker SIGKILLed mid-batch (Celery, ARQ): its unfinished tasks run on a new worker;
* Redis stopped and restarted mid-batch (Celery, ARQ): enqueues in the gap raise
  ``EnqueueError``, the ones after succeed, and everything accepted runs;
* the app shut down with tasks still queued or still being enqueued (every backend): each
  task runs or is logged and marked ``abandoned``, none silently dropped;
* tasks hanging past their timeout (every backend): they time out, the rest of the batch runs.

The Redis-stopping and killing tests use a redis-server (the broker) and workers of their
own; the tasks' counters stay on the suite's redis-server, which stays up, so a task whose
own ``INCR`` failed in the outage is not mistaken for a lost one. Every test writes its
counts to the reliability JSON (see ``_support.record``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from pacificpy.background.backend import BackgroundBackend
from pacificpy.background.decorators import configure_background_tasks
from pacificpy.background.monitor import get_task_monitor
from pacificpy.errors import EnqueueError, TaskTimeout
from pacificpy.types import TaskStatus
from tests.conformance import tasks
from tests.conformance.harness import SIGNING_KEY, Harness
from tests.reliability import _support
from tests.reliability import tasks as rel_tasks
from tests.reliability.conftest import load_harness_module
from tests.support.redis_server import RedisServer
from tests.support.uvicorn_server import serve_app

pytestmark = [pytest.mark.redis, pytest.mark.timeout(180)]

APP = "tests.reliability.apps.load_app:app"
VISIBILITY = 1.0  # Celery: seconds before a dead worker's unacked message is given back
WAIT = 90.0
REDIS_BACKENDS = ["celery", "arq"]


def until(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- workers of the fault tests ------------------------------------------------------------


class Workers:
    """Real worker processes of ``name`` on ``url``, reusing the backends' test helpers."""

    def __init__(self, name: str, broker: str, counters: str, logdir: Path) -> None:
        load_harness_module(name)  # skip if the backend is not ready
        self.name = name
        self.broker = broker
        self.counters = counters
        self.logdir = logdir
        self.started: list[Any] = []

    def start(self, supervised: bool = False) -> Any:
        if self.name == "celery":
            from tests.conformance.harness_celery import CeleryWorker

            # CeleryWorker passes its URL as PACIFICPY_TEST_REDIS (the counters); the
            # broker comes from PACIFICPY_REL_BROKER, set in this process's environment.
            worker = CeleryWorker(
                self.counters,
                concurrency=2,
                visibility_timeout=VISIBILITY,
                app="tests.reliability.apps.celery_workers",
            ).start()
            self.started.append(worker)
            worker.wait_ready()
            return worker
        from tests.background.backends._arq_procs import ARQ, PACIFICPY, Proc

        cmd = (
            [*PACIFICPY, "worker", "tests.reliability.apps.arq_workers"]
            if supervised
            else [*ARQ, "tests.reliability.apps.arq_workers.WorkerSettings"]
        )
        log = self.logdir / f"arq-{len(self.started)}.log"
        env = {
            "PACIFICPY_TEST_REDIS": self.counters,
            "PACIFICPY_REL_BROKER": self.broker,
            "PACIFICPY_TEST_ARQ_DB": "1",
        }
        proc = Proc(cmd, log, env)
        self.started.append(proc)
        proc.wait_for("Starting worker")
        return proc

    def sigkill(self, worker: Any) -> None:
        """SIGKILL the whole worker at once (for Celery: main and pool processes)."""
        if self.name == "celery":
            worker.signal(signal.SIGKILL, group=True)
            worker.wait(10)
        else:
            os.kill(worker.pid, signal.SIGKILL)
            worker.popen.wait(10)

    def alive(self, worker: Any) -> bool:
        proc = worker.proc if self.name == "celery" else worker.popen
        return bool(proc.poll() is None)

    def log(self, worker: Any) -> str:
        return str(worker.log() if self.name == "celery" else worker.text())

    def close(self) -> None:
        for worker in self.started:
            if self.name == "celery":
                worker.close()
            else:
                try:
                    worker.stop()
                except Exception:
                    worker.popen.kill()


@pytest.fixture
def own_redis(monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    """A persistent redis-server of this test alone, the broker, free to stop and restart.

    The tasks' counters stay on the suite's ``rel_redis``, which stays up: a task whose own
    side effect fails during the outage would otherwise look lost.
    """
    _support_need_binary()
    with _support.persistent_redis_server() as server:
        monkeypatch.setenv("PACIFICPY_REL_BROKER", server.url)
        monkeypatch.setenv("PACIFICPY_TEST_ARQ_DB", "1")
        yield server


def _support_need_binary() -> None:
    from tests.reliability.conftest import _need_redis_binary

    _need_redis_binary()


@pytest.fixture(params=REDIS_BACKENDS)
def fault_rig(
    request: pytest.FixtureRequest,
    own_redis: RedisServer,
    rel_redis_url: str,
    tmp_path: Path,
) -> Iterator[tuple[Workers, BackgroundBackend, redis.Redis]]:
    name: str = request.param
    workers = Workers(name, own_redis.url, rel_redis_url, tmp_path)
    from tests.reliability.apps.backends import make

    backend = make(name, own_redis.url, visibility_timeout=VISIBILITY)
    configure_background_tasks(backend, signing_key=SIGNING_KEY)
    counter = redis.Redis.from_url(rel_redis_url)
    try:
        yield workers, backend, counter
    finally:
        workers.close()
        shutdown_sync = getattr(backend, "shutdown_sync", None)
        if shutdown_sync is not None:
            shutdown_sync(timeout=5)
        counter.close()


# -- SIGKILL -------------------------------------------------------------------------------

KILL_BATCH = 120


async def test_worker_sigkill_mid_batch(
    fault_rig: tuple[Workers, BackgroundBackend, redis.Redis],
) -> None:
    """A fifth of the batch runs, then the worker is killed while it runs two held tasks.

    The kill comes while every slot of the worker holds a task: each message is then in the
    broker, queued or delivered-but-unacknowledged, never only in the worker's memory.
    Killed at any instant instead, a Celery worker on Redis can lose the one message it has
    just popped (kombu moves it to its unacked set in a second step): docs/reliability.md
    states that window.
    """
    workers, _backend, counter = fault_rig
    keys = _support.new_keys(KILL_BATCH, f"kill-{workers.name}")
    free, held = keys[: KILL_BATCH // 5], keys[KILL_BATCH // 5 :]
    gate = f"gate-{keys[0]}"
    counter.set(f"pacificpy-test:{gate}", 1)
    first = workers.start()
    for key in free:
        await rel_tasks.slow_count.delay(key, 0.05)
    await asyncio.to_thread(
        until,
        lambda: all(c > 0 for c in _support.read_counts(counter, free)),
        60.0,
        "the free fifth of the batch",
    )
    for key in held:
        await rel_tasks.gated_count.delay(key, gate)
    # Both of the worker's slots hold a gated task (Celery: concurrency 2, prefetch 1).
    await asyncio.to_thread(
        until,
        lambda: int(counter.get(f"pacificpy-test:started:{gate}") or 0) >= 2,
        60.0,
        "two held tasks running",
    )
    workers.sigkill(first)
    done_at_kill = sum(c > 0 for c in _support.read_counts(counter, keys))
    if workers.name == "celery":
        # kombu gives an unacknowledged message back once it is older than the visibility
        # timeout, when a worker starts: start the next worker after that.
        killed_at = time.time()
        await asyncio.to_thread(
            until, lambda: time.time() > killed_at + VISIBILITY + 0.2, 10.0, "visibility"
        )
    workers.start()
    counter.delete(f"pacificpy-test:{gate}")
    tally = await asyncio.to_thread(_support.wait_counts, counter, keys, timeout=WAIT)
    _support.record(
        workers.name, "worker SIGKILL mid-batch", tally, completed_before_kill=done_at_kill
    )
    assert done_at_kill == len(free), "the kill came after the batch: not mid-batch"
    assert tally.lost == 0, f"lost after SIGKILL: {tally.missing}"


# -- Redis stopped and restarted -------------------------------------------------------------

BATCH_A, GAP, BATCH_B = 60, 10, 30


async def test_redis_restart_mid_batch(
    fault_rig: tuple[Workers, BackgroundBackend, redis.Redis],
    own_redis: RedisServer,
) -> None:
    workers, _backend, counter = fault_rig
    worker = workers.start(supervised=True)
    keys_a = _support.new_keys(BATCH_A, f"redis-a-{workers.name}")
    keys_gap = _support.new_keys(GAP, f"redis-gap-{workers.name}")
    keys_b = _support.new_keys(BATCH_B, f"redis-b-{workers.name}")
    for key in keys_a:
        await rel_tasks.slow_count.delay(key, 0.05)
    await asyncio.to_thread(
        until,
        lambda: sum(c > 0 for c in _support.read_counts(counter, keys_a)) >= 10,
        60.0,
        "the batch to start",
    )
    await asyncio.to_thread(own_redis.stop)
    refused = 0
    for key in keys_gap:
        with pytest.raises(EnqueueError) as info:
            await tasks.count.delay(key)
        assert info.value.cause is not None
        refused += 1
    await asyncio.to_thread(own_redis.start)
    failed_after: list[str] = []
    for key in keys_b:
        try:
            await tasks.count.delay(key)
        except EnqueueError as exc:
            failed_after.append(f"{key}: {exc}")
    keys = keys_a + [k for k in keys_b if not any(f.startswith(k + ":") for f in failed_after)]
    tally = await asyncio.to_thread(_support.wait_counts, counter, keys, timeout=WAIT)
    parked = 0
    if tally.lost and workers.name == "celery":
        # kombu keeps a message a worker held when the connection broke in its "unacked"
        # hash and gives it back only after the visibility timeout, at a worker's start or
        # at its periodic check (every ~100 s): a new worker proves it is not lost.
        broker = redis.Redis.from_url(own_redis.url)
        parked = int(broker.hlen("unacked"))
        broker.close()
        workers.start()
        tally = await asyncio.to_thread(_support.wait_counts, counter, keys, timeout=WAIT)
    ran_in_gap = sum(_support.read_counts(counter, keys_gap))
    _support.record(
        workers.name,
        "Redis stopped + restarted mid-batch",
        tally,
        refused_in_gap=refused,
        refused_after_restart=len(failed_after),
        worker_alive=workers.alive(worker),
        parked_in_unacked=parked,
    )
    assert not failed_after, f"enqueues after the restart failed: {failed_after[:3]}"
    assert tally.lost == 0, f"lost across the Redis restart: {tally.missing}"
    assert ran_in_gap == 0, "a task refused with EnqueueError ran anyway"
    assert workers.alive(worker), "the worker died with Redis:\n" + workers.log(worker)[-3000:]


# -- app shutdown with tasks queued -----------------------------------------------------------

_ABANDONED = re.compile(r"task \S+ (\S+) abandoned at shutdown")


def _abandoned_ids(log: Path) -> set[str]:
    try:
        return set(_ABANDONED.findall(log.read_text(errors="replace")))
    except FileNotFoundError:
        return set()


async def test_app_shutdown_with_tasks_queued(
    rig: Harness, counter: redis.Redis, rel_redis_url: str, tmp_path: Path
) -> None:
    """SIGINT right after a request queued (local) or started enqueuing (Redis backends)
    a batch: every task runs, or is logged and marked abandoned. On SQLite what the
    shutdown handed back to the file runs once the app is started again."""
    log = tmp_path / "app.log"
    env = {
        "PACIFICPY_REL_BACKEND": rig.name,
        "PACIFICPY_TEST_REDIS": rel_redis_url,
        "PACIFICPY_REL_LOG": str(log),
        "PACIFICPY_REL_SHUTDOWN_TIMEOUT": "0.5",
    }
    if rig.name == "local":
        keys = _support.new_keys(48, "shutdown-local")
        route, payload = "/enqueue-many-slow", {"keys": keys, "seconds": 0.25}
    else:
        keys = _support.new_keys(300, f"shutdown-{rig.name}")
        route, payload = "/enqueue-many", {"keys": keys}
    if rig.name == "sqlite":  # durable: what the shutdown hands back runs after a restart
        env["PACIFICPY_REL_SQLITE"] = str(tmp_path / "tasks.db")
    with serve_app(APP, env=env) as (base_url, proc):
        response = httpx.post(f"{base_url}{route}", json=payload, timeout=60.0)
        assert response.status_code == 200, response.text
        ids: list[str] = response.json()["ids"]
        proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(proc.wait, 60)
    by_id = dict(zip(ids, keys, strict=True))
    abandoned = {by_id[i] for i in _abandoned_ids(log) if i in by_id}
    restarted = serve_app(APP, env=env) if rig.name == "sqlite" else contextlib.nullcontext()
    with restarted:
        tally = await asyncio.to_thread(
            _support.wait_counts, counter, keys, timeout=WAIT, excused=lambda: abandoned
        )
    abandoned_not_run = sum(
        1
        for k, c in zip(keys, _support.read_counts(counter, keys), strict=True)
        if k in abandoned and not c
    )
    _support.record(
        rig.name,
        "app shutdown with tasks queued",
        tally,
        abandoned=len(abandoned),
        abandoned_not_run=abandoned_not_run,
    )
    assert tally.lost == 0, f"silently dropped at shutdown: {tally.missing}"
    assert tally.completed + abandoned_not_run == len(keys)
    if rig.name == "local":
        assert abandoned, "expected a 0.5 s shutdown to leave some slow tasks abandoned"


def test_local_shutdown_marks_leftovers_abandoned_in_the_monitor(rel_redis_url: str) -> None:
    """In process: what the shutdown did not finish is ``abandoned`` in the monitor."""
    from pacificpy import PacificPy
    from pacificpy.background.local import get_local_executor
    from pacificpy.testing import TestClient

    executor = get_local_executor(2)
    configure_background_tasks(executor)
    app = PacificPy(shutdown_timeout=0.3)
    keys = _support.new_keys(30, "shutdown-monitor")
    with TestClient(app):
        handles = [rel_tasks.slow_count.delay(key, 0.1) for key in keys]
    counter = redis.Redis.from_url(rel_redis_url)
    counts = _support.read_counts(counter, keys)
    monitor = get_task_monitor()
    statuses = [getattr(monitor.get(h.id), "status", None) for h in handles]
    dropped = [
        h.id
        for h, c, s in zip(handles, counts, statuses, strict=True)
        if not c and s is not TaskStatus.ABANDONED
    ]
    abandoned = sum(s is TaskStatus.ABANDONED for s in statuses)
    assert abandoned > 0
    assert not dropped, f"neither run nor abandoned: {dropped}"
    for handle, status in zip(handles, statuses, strict=True):
        if status is TaskStatus.ABANDONED:
            assert executor.get_status_sync(handle.id) is TaskStatus.ABANDONED
    counter.close()


# -- hanging tasks ------------------------------------------------------------------------------

GOOD = 30


async def test_tasks_hanging_past_their_timeout(rig: Harness, counter: redis.Redis) -> None:
    keys = _support.new_keys(GOOD, f"hang-{rig.name}")
    hung = [await tasks.slow_async.delay(60.0) for _ in range(2)]
    hung += [await tasks.slow_sync.delay(2.0) for _ in range(2)]
    for key in keys:
        await tasks.count.delay(key)
    tally = await asyncio.to_thread(_support.wait_counts, counter, keys, timeout=WAIT)
    timed_out = 0
    for handle in hung:
        with pytest.raises(TaskTimeout):
            await handle.result(timeout=WAIT)
        timed_out += 1
    _support.record(
        rig.name,
        "tasks hanging past timeout",
        dataclass_replace(tally, sent=tally.sent + len(hung)),
        timed_out=timed_out,
    )
    assert tally.lost == 0, tally.missing
    assert timed_out == len(hung)
    after = await tasks.add.delay(2, 3)  # the workers still take work
    assert await after.result(timeout=WAIT) == 5


def dataclass_replace(tally: _support.Tally, **changes: Any) -> _support.Tally:
    import dataclasses

    return dataclasses.replace(tally, **changes)
