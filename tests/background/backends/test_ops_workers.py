"""Operability on the Redis backends, with real worker processes and the test's own
redis-server (SPEC §10.6): health endpoints of the app and of ``pacificpy worker
--health-port`` following a Redis stop and restart, a SIGKILLed worker shown as lost with
its running task, and the oldest waiting task's age for an autoscaler.

Each test runs for Celery (a real ``celery worker``, started by ``pacificpy worker``) and
ARQ (real ARQ worker processes under the ``pacificpy worker`` supervisor).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pacificpy import PacificPy
from pacificpy.background.workers import WorkerInfo, list_workers
from pacificpy.testing import TestClient
from tests.apps import ops_app
from tests.background.backends._module_workers import Worker, command_argv
from tests.support.health import get_json, ready_is
from tests.support.metrics import oldest_age
from tests.support.net import free_port
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_for

pytestmark = [pytest.mark.redis, pytest.mark.timeout(180)]

KINDS = ["celery", "arq"]
#: Generous deadlines: the machine is shared and loaded.
START = 90.0
WAIT = 45.0


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend(kind: str, own_redis: RedisServer) -> Iterator[Any]:
    b = ops_app.configure(kind, own_redis.url)
    yield b
    b.shutdown_sync()


def start_worker(kind: str, url: str, logs: Path, *extra: str) -> Worker:
    """``pacificpy worker tests.apps.ops_app`` for ``kind``, one worker process, run in
    ``logs`` (its log goes there)."""
    argv = command_argv(f"pacificpy worker tests.apps.ops_app --workers 1 {' '.join(extra)}")
    env = {"PACIFICPY_OPS_BACKEND": kind, "PACIFICPY_TEST_REDIS": url}
    return Worker(argv, logs, env)


def workers(backend: Any) -> list[WorkerInfo]:
    try:
        return list_workers(backend.state)
    except redis.RedisError:
        return []


def test_worker_health_follows_redis(kind: str, own_redis: RedisServer, tmp_path: Path) -> None:
    port = free_port()
    worker = start_worker(kind, own_redis.url, tmp_path, f"--health-port {port} --health-grace 1")
    try:
        assert wait_for(lambda: get_json(port, "/healthz/live")[0] == 200, START, what="live")
        wait_for(lambda: ready_is(port, 200), START, what="ready 200")
        own_redis.stop()
        body = wait_for(lambda: ready_is(port, 503), WAIT, what="ready 503 without Redis")
        assert body["status"] == "not ready"
        failed = [c["detail"] for c in body["checks"].values() if not c["ok"]]
        assert failed and all("unreachable" in d for d in failed), body
        assert get_json(port, "/healthz/live")[0] == 200  # alive all the same: no restart
        own_redis.start()
        wait_for(lambda: ready_is(port, 200), WAIT, what="ready 200 after the restart")
        log = worker.log()
        assert "cannot reach its backend" in log
        assert "reaches its backend again" in log
        assert worker.alive()
    finally:
        worker.stop()


def test_app_ready_follows_redis(backend: Any, own_redis: RedisServer) -> None:
    app = PacificPy()
    app.include_health(timeout=2.0)
    with TestClient(app) as client:
        assert client.get("/healthz/live").status_code == 200
        ok = client.get("/healthz/ready")
        assert ok.status_code == 200, ok.text
        assert ok.json()["checks"]["backend"]["ok"] is True
        own_redis.stop()
        down = client.get("/healthz/ready")
        assert down.status_code == 503
        assert down.json()["checks"]["backend"]["ok"] is False
        assert down.json()["checks"]["backend"]["error"]
        assert client.get("/healthz/live").status_code == 200
        own_redis.start()
        wait_for(lambda: client.get("/healthz/ready").status_code == 200, WAIT, what="ready")


def test_sigkilled_worker_is_lost_with_its_running_task(
    kind: str, backend: Any, own_redis: RedisServer, tmp_path: Path
) -> None:
    worker = start_worker(kind, own_redis.url, tmp_path)
    client = redis.Redis.from_url(own_redis.url)
    try:
        (first,) = wait_for(lambda: workers(backend), START, what="a registered worker")
        assert first.backend == kind
        assert first.pid != os.getpid()
        assert not first.lost()
        key = uuid.uuid4().hex
        handle = ops_app.ops_sleep.delay(key, 60.0)
        pid = int(wait_for(lambda: client.get(f"ops:started:{key}"), WAIT, what="task start"))

        def running() -> WorkerInfo | None:
            found = [w for w in workers(backend) if handle.id in {r["id"] for r in w.running}]
            return found[0] if found else None

        victim = wait_for(running, WAIT, what="the task in a heartbeat")
        assert not victim.lost()
        # Celery: the whole worker (main and pool); ARQ: the worker process (its
        # supervisor starts another).
        if kind == "celery":
            os.killpg(worker.proc.pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
        killed = time.time()

        def lost() -> WorkerInfo | None:
            found = [w for w in workers(backend) if w.id == victim.id and w.lost()]
            return found[0] if found else None

        gone = wait_for(lost, WAIT, what="the killed worker shown as lost")
        # Lost once 3 heartbeats are missed, counted from its last one (before the kill).
        assert gone.last_seen <= killed
        assert time.time() - gone.last_seen > 3 * ops_app.HEARTBEAT
        assert [(r["id"], r["name"]) for r in gone.running] == [(handle.id, ops_app.ops_sleep.name)]
        view = gone.to_dict()
        assert view["state"] == "lost"
    finally:
        worker.stop()


def test_oldest_task_age_grows_without_workers_and_drops_with_one(
    kind: str, backend: Any, own_redis: RedisServer, tmp_path: Path
) -> None:
    assert oldest_age() == 0.0  # nothing waits
    handle = ops_app.ops_add.delay(2, 3)
    first = oldest_age()
    assert first is not None and first >= 0.0
    time.sleep(1.5)  # the time that passes is what is measured
    second = oldest_age()
    assert second is not None and second >= first + 1.0
    worker = start_worker(kind, own_redis.url, tmp_path)
    try:
        assert handle.result_sync(timeout=START) == 5
        assert wait_for(lambda: oldest_age() == 0.0, WAIT, what="age back to 0")
        # A task that runs is not waiting (ARQ keeps running jobs in its queue).
        key = uuid.uuid4().hex
        ops_app.ops_sleep.delay(key, 4.0)
        client = redis.Redis.from_url(own_redis.url)
        wait_for(lambda: client.get(f"ops:started:{key}"), WAIT, what="the task start")
        time.sleep(1.0)
        assert oldest_age() == 0.0
    finally:
        worker.stop()


def test_app_ready_names_the_monitor_store_local(own_redis: RedisServer) -> None:
    """The local executor's state is in memory; its app's Redis monitor store is what an
    outage takes away."""
    from pacificpy.background.decorators import configure_background_tasks
    from pacificpy.background.local import LocalExecutor
    from pacificpy.background.monitor import configure_task_monitor

    configure_background_tasks(LocalExecutor(1))
    configure_task_monitor(redis_url=own_redis.url)
    app = PacificPy()
    app.include_health()
    client = TestClient(app)
    assert client.get("/healthz/ready").status_code == 200
    own_redis.stop()
    down = client.get("/healthz/ready")
    assert down.status_code == 503
    checks = down.json()["checks"]
    assert checks["backend"]["ok"] is True
    assert checks["monitor"]["ok"] is False and checks["monitor"]["error"]
    own_redis.start()
    wait_for(lambda: client.get("/healthz/ready").status_code == 200, WAIT, what="ready")
