"""SPEC §3.8: the app starts the backend and drains it at shutdown; scripts drain at exit."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pacificpy import PacificPy
from pacificpy.background import current_task
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.lifecycle import app_shutdown, app_startup
from pacificpy.background.local import get_local_executor
from pacificpy.background.monitor import get_task_monitor
from pacificpy.routing import Request
from pacificpy.testing import TestClient
from pacificpy.types import TaskStatus

REPO_ROOT = Path(__file__).resolve().parents[2]
gate = threading.Event()
done: list[str] = []


@background
def short(label: str) -> str:
    time.sleep(0.1)
    done.append(label)
    return label


@background
def held(label: str) -> str:
    gate.wait(timeout=30)
    done.append(label)
    return label


@background
async def where() -> int:
    return threading.get_ident()


def _app_enqueuing(*tasks: tuple[Any, str], **app_options: Any) -> tuple[PacificPy, list[str]]:
    app = PacificPy(**app_options)
    ids: list[str] = []

    @app.post("/enqueue")
    async def enqueue(request: Request) -> dict[str, Any]:
        for task, label in tasks:
            ids.append((await task.delay(label)).id)
        return {"ok": True}

    return app, ids


def test_app_starts_executor_and_async_tasks_run_on_serving_loop() -> None:
    executor = get_local_executor(max_workers=2)
    configure_background_tasks(executor)
    app = PacificPy()
    seen: dict[str, int] = {}

    @app.get("/where")
    async def handler(request: Request) -> dict[str, Any]:
        seen["loop_thread"] = threading.get_ident()
        handle = await where.delay()
        return {"thread": await handle.result(timeout=10)}

    with TestClient(app) as client:
        assert executor._started  # started by the lifespan, before any task
        assert client.get("/where").json()["thread"] == seen["loop_thread"]
    assert not executor._started


def test_shutdown_runs_queued_tasks_within_timeout() -> None:
    done.clear()
    executor = get_local_executor(max_workers=1)
    configure_background_tasks(executor)
    app, ids = _app_enqueuing(*[(short, f"t{i}") for i in range(4)], shutdown_timeout=10)
    with TestClient(app) as client:
        client.post("/enqueue")
        assert executor.queue_length_sync() >= 1  # still queued when the app stops
    assert done == ["t0", "t1", "t2", "t3"]
    monitor = get_task_monitor()
    assert {monitor.get(i).status for i in ids} == {TaskStatus.COMPLETED}  # type: ignore[union-attr]


def test_shutdown_timeout_marks_leftovers_abandoned(caplog: pytest.LogCaptureFixture) -> None:
    done.clear()
    gate.clear()
    executor = get_local_executor(max_workers=1)
    configure_background_tasks(executor)
    app, ids = _app_enqueuing((held, "running"), (short, "q1"), (short, "q2"), shutdown_timeout=0.3)
    try:
        with caplog.at_level(logging.ERROR, logger="pacificpy.background"):
            with TestClient(app) as client:
                client.post("/enqueue")
                started = time.monotonic()
            assert time.monotonic() - started < 15  # well under the executor's own 30 s
        monitor = get_task_monitor()
        for task_id in ids:
            record = monitor.get(task_id)
            assert record is not None and record.status is TaskStatus.ABANDONED, record
            assert task_id in caplog.text
            assert executor.get_status_sync(task_id) is TaskStatus.ABANDONED
        assert "abandoned" in caplog.text
        assert done == []
    finally:
        gate.set()


def test_app_shutdown_timeout_none_uses_backend_timeout() -> None:
    gate.clear()
    executor = get_local_executor(max_workers=1, shutdown_timeout=0.2)
    configure_background_tasks(executor)
    app, ids = _app_enqueuing((held, "x"))
    assert app.shutdown_timeout is None
    try:
        started = time.monotonic()
        with TestClient(app) as client:
            client.post("/enqueue")
        assert time.monotonic() - started < 15  # not 30 s: the executor's own 0.2 s
        assert get_task_monitor().get(ids[0]).status is TaskStatus.ABANDONED  # type: ignore[union-attr]
    finally:
        gate.set()


async def test_app_shutdown_timeout_overrides_backend_and_is_restored() -> None:
    gate.clear()
    executor = get_local_executor(max_workers=1)  # 30 s of its own
    configure_background_tasks(executor)
    try:
        await app_startup()
        handle = await held.delay("y")
        started = time.monotonic()
        await app_shutdown(timeout=0.2)
        assert time.monotonic() - started < 15  # well under the executor's own 30 s
        assert executor.shutdown_timeout == 30.0
        assert executor.get_status_sync(handle.id) is TaskStatus.ABANDONED
    finally:
        gate.set()


def _run_script(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env
    )


def test_plain_script_starts_on_first_use_and_drains_at_exit(tmp_path: Path) -> None:
    proc = _run_script(
        """
        import asyncio, sys, time
        from pacificpy.background import background

        @background
        def slow_print(n):
            time.sleep(0.5)
            sys.stdout.write(f"sync task {n} done\\n")

        @background
        async def async_print(n):
            await asyncio.sleep(0.5)
            sys.stdout.write(f"async task {n} done\\n")

        slow_print.delay(1)
        async_print.delay(2)
        sys.stdout.write("main finished\\n")
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "main finished"
    assert sorted(lines[1:]) == ["async task 2 done", "sync task 1 done"]


def test_script_chaining_from_worker_thread_drains_whole_chain(tmp_path: Path) -> None:
    proc = _run_script(
        """
        import sys
        from pacificpy.background import background, current_task

        @background
        def step(n):
            if n < 3:
                step.delay(n + 1)
            sys.stdout.write(f"step {n} parent={'yes' if current_task().parent_id else 'no'}\\n")

        step.delay(1)
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.splitlines()) == [
        "step 1 parent=no",
        "step 2 parent=yes",
        "step 3 parent=yes",
    ]


def test_current_task_available_in_lifecycle_tasks() -> None:
    assert current_task() is None
