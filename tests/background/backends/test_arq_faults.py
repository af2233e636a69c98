"""Faults on the ARQ backend, with real worker processes and real Redis stops.

How fast a killed worker's job runs again: ARQ marks a running job with
``arq:in-progress:<id>``; no other worker takes the job while that key lives. PacificPy's
workers refresh it every third of ``in_progress_timeout`` (30 s by default, 1 s here), so
after a SIGKILL the job is picked up again at most ``in_progress_timeout`` later.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from arq.connections import RedisSettings

from pacificpy.background import TaskStatus
from pacificpy.background.backends.arq_backend import ARQBackgroundBackend
from pacificpy.background.decorators import configure_background_tasks
from pacificpy.errors import EnqueueError, TaskFailed
from tests.background.backends._arq_procs import ARQ, PACIFICPY, Proc, running
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.redis

DB = 3
WAIT = 30.0


@pytest.fixture
def fault(redis_server: RedisServer) -> Iterator[dict[str, Any]]:
    url = redis_server.fresh_db_url(DB)
    os.environ["PACIFICPY_FAULT_REDIS"] = url
    from tests.apps import arq_fault_app

    arq_fault_app.URL = url
    backend = arq_fault_app.make_backend()
    configure_background_tasks(backend)
    yield {
        "url": url,
        "env": {"PACIFICPY_FAULT_REDIS": url},
        "app": arq_fault_app,
        "backend": backend,
        "store": redis.Redis.from_url(url),
    }
    backend.shutdown_sync()


def _wait_key(store: redis.Redis, key: str, timeout: float = WAIT) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = store.get(key)
        if value is not None:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{key} was not set within {timeout}s")


def test_killed_worker_job_runs_again_on_another(fault: dict[str, Any], tmp_path: Path) -> None:
    app, store = fault["app"], fault["store"]
    cmd = [*ARQ, "tests.apps.arq_fault_app.WorkerSettings"]
    with (
        running(cmd, tmp_path / "w1.log", fault["env"]) as w1,
        running(cmd, tmp_path / "w2.log", fault["env"]) as w2,
    ):
        key = uuid.uuid4().hex
        handle = app.hang_first_time.delay(key)
        first_pid = int(_wait_key(store, f"fault:{key}:pid:1"))
        victim, survivor = (w1, w2) if first_pid == w1.pid else (w2, w1)
        assert first_pid == victim.pid
        killed_at = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        result = handle.result_sync(timeout=WAIT)
        assert result["pid"] == survivor.pid
        assert result["runs"] == 2
        assert result["attempt"] == 1  # a lost delivery is not a failed attempt
        # the in-progress lease (1 s here, 30 s by default) bounds the delay, plus a poll and
        # the run; 20 s leaves room for a loaded machine and still tells the two apart
        assert time.monotonic() - killed_at < 20


def test_redis_stopped_during_enqueue_then_recovers() -> None:
    from tests.apps import arq_fault_app

    with RedisServer() as server:
        backend = ARQBackgroundBackend(redis_settings=RedisSettings.from_dsn(server.url))
        configure_background_tasks(backend)
        assert arq_fault_app.add.delay(1, 1).id
        server.stop()
        with pytest.raises(EnqueueError) as info:
            arq_fault_app.add.delay(1, 2)
        assert "Redis" in str(info.value)
        assert info.value.cause is not None
        server.start()
        handle = arq_fault_app.add.delay(2, 2)
        assert backend.queue_length_sync() == 1  # the first job died with the server
        assert handle.status_sync() is TaskStatus.QUEUED
        backend.shutdown_sync()


async def test_redis_stopped_during_async_enqueue_then_recovers() -> None:
    from tests.apps import arq_fault_app

    with RedisServer() as server:
        backend = ARQBackgroundBackend(redis_settings=RedisSettings.from_dsn(server.url))
        configure_background_tasks(backend)
        await arq_fault_app.add.delay(1, 1)
        server.stop()
        handle = arq_fault_app.add.delay(1, 2)
        with pytest.raises(EnqueueError):
            await handle
        server.start()
        await arq_fault_app.add.delay(2, 2)
        assert await backend.queue_length() == 1
        await backend.shutdown()


async def test_malformed_job_goes_to_dead_letters_worker_keeps_running(
    fault: dict[str, Any], tmp_path: Path
) -> None:
    app, store, backend = fault["app"], fault["store"], fault["backend"]
    cmd = [*ARQ, "tests.apps.arq_fault_app.WorkerSettings"]
    with running(cmd, tmp_path / "w.log", fault["env"]) as worker:
        marker = uuid.uuid4().hex
        store.set("arq:job:malformed", b"\x80\x04garbage " + marker.encode())
        store.zadd("arq:queue", {"malformed": int(time.time() * 1000)})
        deadline = time.monotonic() + WAIT
        while not any(marker in d.data for d in await backend.dead_letters()):
            assert time.monotonic() < deadline, "no dead letter for the malformed job"
            await asyncio.sleep(0.05)
        assert await (await app.add.delay(2, 3)).result(timeout=WAIT) == 5
        assert worker.popen.poll() is None


def test_poison_message_dead_lettered_after_max_deliveries(
    fault: dict[str, Any], tmp_path: Path
) -> None:
    app, store, backend = fault["app"], fault["store"], fault["backend"]
    cmd = [*PACIFICPY, "worker", "tests.apps.arq_fault_app", "--workers", "1"]
    proc = Proc(cmd, tmp_path / "supervisor.log", fault["env"])
    try:
        proc.wait_for("Starting worker")
        key = uuid.uuid4().hex
        handle = app.die.delay(key)
        with pytest.raises(TaskFailed) as info:
            handle.result_sync(timeout=WAIT)
        assert "poison" in str(info.value)
        assert int(store.get(f"fault:{key}:runs") or 0) == app.MAX_DELIVERIES
        (letter,) = [d for d in backend.dead_letters_sync() if d.task_id == handle.id]
        assert letter.reason == "poison"
        assert handle.status_sync() is TaskStatus.DEAD
        proc.wait_for("exited with code -9.*restarting", app.MAX_DELIVERIES)
        assert proc.stop(signal.SIGTERM) == 0
    finally:
        proc.stop(signal.SIGKILL)
