"""Operability on the SQLite backend (SPEC §10.6), with a real second process running the
in-process workers, as an app would: a SIGKILLed process is shown as lost with its running
task, and the oldest waiting task's age grows while no process consumes and drops when
one starts. The enqueueing test process only enqueues (``consume=False``)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pacificpy.background.workers import WorkerInfo, list_workers
from tests.apps import ops_app
from tests.background.backends._module_workers import Worker, command_argv
from tests.support.health import ready_is
from tests.support.metrics import oldest_age
from tests.support.net import free_port
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(120)

START = 60.0
WAIT = 30.0


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "tasks.db")


@pytest.fixture
def backend(db: str) -> Iterator[Any]:
    b = ops_app.configure("sqlite", db, consume=False)
    yield b
    b.shutdown_sync()


def serve(db: str) -> Worker:
    """A process running the SQLite backend's in-process workers on ``db``."""
    argv = [sys.executable, "-c", "from tests.apps import ops_app; ops_app.serve()"]
    env = {"PACIFICPY_OPS_BACKEND": "sqlite", "PACIFICPY_TEST_SQLITE": db}
    return Worker(argv, Path(db).parent, env)  # its log goes beside the file


def test_an_enqueue_only_process_registers_no_worker(backend: Any) -> None:
    asyncio.run(backend.startup())  # as an app serving it starts it
    handle = ops_app.ops_add.delay(1, 2)
    time.sleep(3 * ops_app.HEARTBEAT)  # heartbeats it would have written by now
    assert list_workers(backend.state) == []
    assert handle.status_sync() is not None


def test_sigkilled_process_is_lost_with_its_running_task(backend: Any, db: str) -> None:
    worker = serve(db)
    try:
        (live,) = wait_for(lambda: list_workers(backend.state), START, what="registration")
        assert live.backend == "sqlite" and live.pid == worker.proc.pid
        handle = ops_app.ops_block.delay(60.0)

        def running() -> list[WorkerInfo]:
            return [w for w in list_workers(backend.state) if w.running]

        (busy,) = wait_for(running, WAIT, what="the task in a heartbeat")
        assert busy.running[0]["id"] == handle.id
        os.kill(worker.proc.pid, signal.SIGKILL)
        killed = time.time()
        (lost,) = wait_for(
            lambda: [w for w in list_workers(backend.state) if w.lost()], WAIT, what="lost"
        )
        assert lost.id == live.id and lost.last_seen <= killed
        assert [(r["id"], r["name"]) for r in lost.running] == [(handle.id, ops_app.ops_block.name)]
    finally:
        worker.stop()


def test_oldest_task_age_grows_without_workers_and_drops_with_one(backend: Any, db: str) -> None:
    assert oldest_age() == 0.0
    handle = ops_app.ops_add.delay(2, 3)
    first = oldest_age()
    assert first is not None
    time.sleep(1.5)  # the time that passes is what is measured
    second = oldest_age()
    assert second is not None and second >= first + 1.0
    worker = serve(db)
    try:
        assert handle.result_sync(timeout=START) == 5
        assert wait_for(lambda: oldest_age() == 0.0, WAIT, what="age back to 0")
    finally:
        worker.stop()


def test_worker_command_health_and_a_killed_worker_process(
    backend: Any, db: str, tmp_path: Path
) -> None:
    """``pacificpy worker --health-port`` on SQLite: ready while its process consumes; a
    SIGKILLed process is not ready until its replacement is, and is shown as lost."""
    port = free_port()
    argv = command_argv(
        f"pacificpy worker tests.apps.ops_app --workers 1 --health-port {port} --health-grace 1"
    )
    env = {"PACIFICPY_OPS_BACKEND": "sqlite", "PACIFICPY_TEST_SQLITE": db}
    worker = Worker(argv, tmp_path, env)
    try:
        body = wait_for(lambda: ready_is(port, 200), START, what="ready")
        assert body["checks"]["worker 0 (default)"]["ok"] is True
        (live,) = wait_for(lambda: list_workers(backend.state), START, what="registration")
        assert live.queues == ["default"]
        handle = ops_app.ops_block.delay(60.0)
        wait_for(lambda: [w for w in list_workers(backend.state) if w.running], WAIT,
                 what="the task in a heartbeat")  # fmt: skip
        os.kill(live.pid, signal.SIGKILL)
        wait_for(lambda: ready_is(port, 503), WAIT, what="not ready while it restarts",
                 interval=0.005)  # fmt: skip
        wait_for(lambda: ready_is(port, 200), START, what="ready with its replacement")
        lost = wait_for(
            lambda: [w for w in list_workers(backend.state) if w.id == live.id and w.lost()],
            WAIT,
            what="the killed process shown as lost",
        )
        assert lost[0].running[0]["id"] == handle.id
        assert "restarting it" in worker.log()
    finally:
        worker.stop()
