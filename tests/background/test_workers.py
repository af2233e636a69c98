"""The worker registry (SPEC §10.6) over every TaskState implementation, the local
executor's heartbeat, the link's grace period, the readiness checks, and the readers:
``/metrics``, the dashboard's ``workers`` route and ``pacificpy tasks workers``."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from pacificpy import PacificPy
from pacificpy.background import background
from pacificpy.background.backends.redis.state import RedisTaskState
from pacificpy.background.backends.state import MemoryTaskState, TaskState
from pacificpy.background.decorators import configure_background_tasks
from pacificpy.background.health import Readiness
from pacificpy.background.local import LocalExecutor
from pacificpy.background.workers import (
    Heartbeat,
    Link,
    WorkerHealth,
    WorkerInfo,
    list_workers,
)
from pacificpy.cli import cli
from pacificpy.errors import ConfigurationError
from pacificpy.testing import TestClient
from tests.support.metrics import oldest_age, sample
from tests.support.wait import wait_for

INTERVAL = 0.1
gate = threading.Event()


@background
def wait_for_gate() -> str:
    gate.wait(30)
    return "opened"


@pytest.fixture
def opened_gate() -> Iterator[threading.Event]:
    gate.clear()
    yield gate
    gate.set()


@pytest.fixture(params=["memory", "redis", "sqlite", "postgres"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TaskState]:
    if request.param == "memory":
        yield MemoryTaskState()
        return
    if request.param == "sqlite":
        from pacificpy.background.backends.sqlite.db import Database
        from pacificpy.background.backends.sqlite.state import SQLiteTaskState

        lite = SQLiteTaskState(Database(tmp_path / "tasks.db"))
        yield lite
        lite.close()
        return
    if request.param == "postgres":
        from pacificpy.background.backends.postgres import PostgresTaskState

        pg = PostgresTaskState(request.getfixturevalue("postgres_url"))
        yield pg
        pg.close()
        return
    url = request.getfixturevalue("redis_url")
    s = RedisTaskState(url, prefix=f"pp-test-{uuid.uuid4().hex[:8]}")
    yield s
    s.close()


def record(worker_id: str, last_seen: float, interval: float = 1.0) -> dict[str, Any]:
    return {
        "id": worker_id, "host": "h", "pid": 1, "backend": "x", "queues": ["default"],
        "running": [{"id": "t1", "name": "job", "queue": "default"}],
        "started_at": last_seen - 10, "last_seen": last_seen, "interval": interval,
    }  # fmt: skip


def test_registry_keeps_lists_and_removes_workers(state: TaskState) -> None:
    now = time.time()
    state.put_worker("a", record("a", now), ttl=60)
    state.put_worker("b", record("b", now - 3.5), ttl=60)  # 3 heartbeats of 1 s missed
    state.put_worker("a", record("a", now + 1), ttl=60)  # a heartbeat replaces the last
    found = {w.id: w for w in list_workers(state)}
    assert set(found) == {"a", "b"}
    assert found["a"].last_seen == now + 1
    assert not found["a"].lost() and found["b"].lost()
    assert [w.id for w in list_workers(state)] == ["a", "b"]  # live ones first
    assert found["b"].running == [{"id": "t1", "name": "job", "queue": "default"}]
    state.remove_worker("a")
    assert [w.id for w in list_workers(state)] == ["b"]


def test_registry_forgets_a_worker_past_its_ttl(state: TaskState) -> None:
    state.put_worker("short", record("short", time.time()), ttl=0.2)
    state.put_worker("long", record("long", time.time()), ttl=60)
    assert {w.id for w in list_workers(state)} == {"short", "long"}
    wait_for(lambda: {w.id for w in list_workers(state)} == {"long"}, 10, what="expiry")


def test_lost_after_three_missed_heartbeats() -> None:
    info = WorkerInfo.from_dict(record("w", 1000.0, interval=2.0))
    assert info is not None
    assert not info.lost(now=1000.0 + 5.9)
    assert info.lost(now=1000.0 + 6.1)
    assert info.to_dict(now=1006.1)["state"] == "lost"
    assert WorkerInfo.from_dict({"id": "x"}) is None  # not a record: skipped, no crash


def test_stopped_heartbeat_turns_lost_with_its_running_task() -> None:
    state = MemoryTaskState()
    running = [{"id": "task-1", "name": "resize", "queue": "images"}]
    beat = Heartbeat(state, backend="x", queues=["images"], running=lambda: running,
                     interval=INTERVAL)  # fmt: skip
    beat.start()
    (live,) = list_workers(state)
    assert not live.lost() and live.running == running
    beat.stop(deregister=False)  # as if the process died: the record stays
    stopped = time.time()
    (lost,) = wait_for(lambda: [w for w in list_workers(state) if w.lost()], 10, what="lost")
    assert time.time() - stopped <= 3 * INTERVAL + 5
    assert lost.running == running


def test_heartbeat_interval_is_checked() -> None:
    ex = LocalExecutor(1)
    for bad in (0, -1, "5", True, float("inf")):
        with pytest.raises(ConfigurationError):
            configure_background_tasks(ex, heartbeat_interval=bad)  # type: ignore[arg-type]
    configure_background_tasks(ex, heartbeat_interval=2)
    assert ex.heartbeat_interval == 2.0


def test_local_executor_registers_and_names_running_tasks(opened_gate: threading.Event) -> None:
    ex = LocalExecutor(1)
    configure_background_tasks(ex, heartbeat_interval=INTERVAL)
    handle = wait_for_gate.delay()

    def running() -> list[WorkerInfo]:
        return [w for w in list_workers(ex.state) if w.running]

    (worker,) = wait_for(running, 10, what="the running task in a heartbeat")
    assert worker.backend == "local" and worker.queues == ["*"]
    assert worker.running == [{"id": handle.id, "name": wait_for_gate.name, "queue": "default"}]
    opened_gate.set()
    assert handle.result_sync(timeout=10) == "opened"
    ex.shutdown_sync()
    assert list_workers(ex.state) == []  # a clean stop leaves no record


def test_local_oldest_age_grows_while_busy_and_drops(opened_gate: threading.Event) -> None:
    ex = LocalExecutor(1)  # one thread: the second task waits for it
    configure_background_tasks(ex, heartbeat_interval=INTERVAL)
    assert oldest_age() == 0.0
    first = wait_for_gate.delay()
    wait_for(lambda: ex.queue_length_sync() == 0, 10, what="the first task running")
    second = wait_for_gate.delay()
    age = oldest_age()
    assert age is not None and age >= 0.0
    time.sleep(1.0)  # the time that passes is what is measured
    later = oldest_age()
    assert later is not None and later >= age + 0.8
    wait_for(lambda: sample("pacificpy_tasks_in_flight", {"queue": "default"}) == 1, 10,
             what="one task in flight")  # fmt: skip
    assert sample("pacificpy_workers", {"state": "live"}) == 1
    assert sample("pacificpy_workers", {"state": "lost"}) == 0
    opened_gate.set()
    assert first.result_sync(timeout=10) == second.result_sync(timeout=10) == "opened"
    assert oldest_age() == 0.0


def test_link_turns_not_ready_after_the_grace_and_back(caplog: pytest.LogCaptureFixture) -> None:
    link = Link("worker w", grace=0.3)
    assert link.status() == (True, "backend reachable")
    with caplog.at_level(logging.INFO, logger="pacificpy.worker"):
        link.failed(ConnectionError("refused"))
        ok, detail = link.status()
        assert ok and "refused" in detail  # within the grace period
        time.sleep(0.4)
        ok, detail = link.status()
        assert not ok and "ConnectionError: refused" in detail
        link.status()
        link.ok()
        assert link.status()[0]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "refused" in warnings[0].getMessage()  # logged once
    assert any("reaches its backend again" in r.getMessage() for r in caplog.records)


def test_worker_health_is_ready_only_when_every_check_is() -> None:
    health = WorkerHealth(grace=1)
    assert health.report() == (False, {"worker": {"ok": False, "detail": "starting"}})
    health.add("consuming", lambda: (True, "consuming"))
    assert health.report()[0]

    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    health.add("backend", broken)
    ok, checks = health.report()
    assert not ok and checks["backend"] == {"ok": False, "detail": "RuntimeError: boom"}
    with pytest.raises(ConfigurationError):
        WorkerHealth(grace=0)


class HangingExecutor(LocalExecutor):
    """A backend whose ping never answers until released."""

    def __init__(self) -> None:
        super().__init__(1)
        self.release = threading.Event()
        self.pings = 0

    def ping_sync(self) -> None:
        self.pings += 1
        self.release.wait(30)


def test_ready_answers_in_time_when_the_backend_hangs() -> None:
    backend = HangingExecutor()
    configure_background_tasks(backend)
    readiness = Readiness(timeout=0.3)
    try:
        for _ in range(3):
            started = time.monotonic()
            ok, checks = readiness.check()
            assert not ok and time.monotonic() - started < 5
            assert checks["backend"] == {"ok": False, "error": "no answer within 0.3s"}
            assert checks["monitor"]["ok"] is True
        assert backend.pings == 1  # one hung check, waited for again, never started twice
    finally:
        backend.release.set()
    wait_for(lambda: readiness.check()[0], 10, what="ready once it answers")


def test_include_health_routes_and_bad_timeout() -> None:
    app = PacificPy()
    app.include_health("/status")
    configure_background_tasks(LocalExecutor(1))
    with TestClient(app) as client:
        assert client.get("/status/live").json() == {"status": "live"}
        ready = client.get("/status/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert ready.headers["cache-control"] == "no-store"
    for bad in (0, -1, "2"):
        with pytest.raises(ValueError):
            PacificPy().include_health(timeout=bad)  # type: ignore[arg-type]


def test_dashboard_and_cli_list_workers(opened_gate: threading.Event) -> None:
    ex = LocalExecutor(1)
    configure_background_tasks(ex, heartbeat_interval=INTERVAL)
    handle = wait_for_gate.delay()
    wait_for(lambda: any(w.running for w in list_workers(ex.state)), 10, what="heartbeat")
    app = PacificPy()
    app.include_task_dashboard(token="secret-token-123")
    client = TestClient(app)  # no lifespan: the app's shutdown would drain the executor
    r = client.get("/_tasks/api/workers", headers={"Authorization": "Bearer secret-token-123"})
    assert r.status_code == 200
    (w,) = r.json()["workers"]
    assert w["state"] == "live" and w["running"][0]["id"] == handle.id
    assert r.json()["kept"] is True
    assert client.get("/_tasks/api/workers").status_code == 401
    result = CliRunner().invoke(cli, ["tasks", "workers", "--json"])
    assert result.exit_code == 0, result.output
    (listed,) = orjson.loads(result.output)
    assert listed["running"][0]["id"] == handle.id and listed["state"] == "live"
    table = CliRunner().invoke(cli, ["tasks", "workers"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and handle.id in table.output and "live" in table.output
    opened_gate.set()
    handle.result_sync(timeout=10)
