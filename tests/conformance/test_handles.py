"""SPEC §10.7 on every backend: ``get_handle(task_id)`` reads any task by its id, and a
``result()`` wait that gives up says what state the task is in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from pacificpy.background import TaskHandle, TaskStatus, get_handle
from pacificpy.errors import TaskFailed
from tests.conformance import tasks
from tests.conformance.harness import Harness
from tests.support.uvicorn_server import REPO_ROOT
from tests.support.wait import wait_for

WAIT = 30.0

#: Run in a second process: import the worker module of the backend (which configures it,
#: as an app module would), then read two task ids with get_handle alone.
READER = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
from pacificpy.background import get_handle
from pacificpy.errors import TaskFailed
ok, bad = get_handle(sys.argv[2]), get_handle(sys.argv[3])
out = {"ok": ok.result_sync(30), "ok_status": ok.status_sync().value}
try:
    bad.result_sync(30)
except TaskFailed as exc:
    out["bad_error"] = exc.error_type
out["bad_status"] = bad.status_sync().value
out["unknown_status"] = get_handle("no-such-task-" + sys.argv[2]).status_sync()
print(json.dumps(out))
"""


async def test_get_handle_reads_status_and_result(harness: Harness) -> None:
    handle = await tasks.add.delay(2, 3)
    found = get_handle(handle.id)
    assert type(found) is TaskHandle and type(found) is type(handle)
    assert found.id == handle.id and found.name == tasks.add.name
    assert await found.result(timeout=WAIT) == 5
    assert await found.status() is TaskStatus.COMPLETED
    assert found.status_sync() is TaskStatus.COMPLETED
    assert await found is found  # awaiting it, as a handle from .delay(), is harmless


def test_get_handle_without_a_loop(harness: Harness) -> None:
    handle = tasks.add.delay(20, 22)
    found = get_handle(handle.id)
    assert found.result_sync(timeout=WAIT) == 42
    assert found.status_sync() is TaskStatus.COMPLETED


async def test_get_handle_of_a_failed_task_raises_its_failure(harness: Harness) -> None:
    handle = await tasks.fail_always.delay("by id")
    with pytest.raises(TaskFailed, match="by id"):
        await get_handle(handle.id).result(timeout=WAIT)
    assert await get_handle(handle.id).status() in (TaskStatus.FAILED, TaskStatus.DEAD)


async def test_get_handle_on_the_backend_itself(harness: Harness) -> None:
    backend = harness.backend
    assert backend is not None
    handle = await tasks.add.delay(1, 2)
    found = backend.get_handle(handle.id)
    assert type(found) is TaskHandle
    assert await found.result(timeout=WAIT) == 3


async def test_unknown_id_has_status_none_and_its_result_times_out(harness: Harness) -> None:
    found = get_handle(f"nope-{uuid.uuid4().hex}")
    assert await found.status() is None
    assert found.status_sync() is None
    with pytest.raises(TimeoutError) as info:
        await found.result(timeout=0.5)
    assert "status None" in str(info.value)
    with pytest.raises(TimeoutError):
        found.result_sync(timeout=0.5)
    with pytest.raises(TimeoutError):
        await get_handle("nope").result(timeout=0.5)


def test_get_handle_refuses_what_is_not_an_id(harness: Harness) -> None:
    with pytest.raises(TypeError, match="task id is a string"):
        get_handle(42)  # type: ignore[arg-type]


async def test_a_fresh_backend_instance_reads_the_task(harness: Harness) -> None:
    """Celery and ARQ: another backend object (as in another process) finds the outcome in
    Redis. The local executor keeps outcomes in its own process (skipped there)."""
    handle = await tasks.add.delay(6, 7)
    other = harness.make_backend()
    try:
        found = other.get_handle(handle.id)
        assert await found.result(timeout=WAIT) == 13
        assert await found.status() is TaskStatus.COMPLETED
        assert found.status_sync() is TaskStatus.COMPLETED
    finally:
        other.shutdown_sync(timeout=5)  # type: ignore[attr-defined]


async def test_get_handle_in_another_process(harness: Harness) -> None:
    """A second process that only imports the app module reads status and result by id."""
    ok = await tasks.add.delay(40, 2)
    bad = await tasks.fail_always.delay("seen elsewhere")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, "-c", READER, f"tests.conformance.{harness.name}_app", ok.id, bad.id],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["ok"] == 42 and out["ok_status"] == "completed"
    assert out["bad_error"] == "ValueError"
    assert out["bad_status"] in ("failed", "dead")
    assert out["unknown_status"] is None


async def test_result_timeout_on_a_queued_task_says_so(harness: Harness) -> None:
    """Celery and ARQ: a queue no worker consumes. Local, SQLite with in-process workers
    (every queue runs): a countdown."""
    if harness.name in ("local", "sqlite"):
        handle = await tasks.add.apply_async(args=(1, 1), countdown=3600)
        hint = "countdown"
    else:
        queue = f"unconsumed-{uuid.uuid4().hex[:8]}"
        handle = await tasks.add.apply_async(args=(1, 1), queue=queue)
        hint = f"is a worker consuming queue {queue!r}? (pacificpy worker MODULE -Q {queue})"
    assert await handle.status() is TaskStatus.QUEUED
    with pytest.raises(TimeoutError) as info:
        await handle.result(timeout=0.5)
    message = str(info.value)
    assert f"{handle.id} is still queued after 0.5 s: " in message, message
    assert hint in message, message
    with pytest.raises(TimeoutError, match=r"still queued after 0\.5 s"):
        get_handle(handle.id).result_sync(timeout=0.5)


async def test_result_timeout_on_a_running_task_gives_its_status(harness: Harness) -> None:
    handle = await tasks.sleep_for.delay(3.0)
    if harness.name.startswith("celery"):
        # Celery keeps no running mark: with the in-memory monitor of this test, the task
        # looks queued until its outcome, and the message says it may be running.
        expected = r"still queued after 0.2 s: .*or it is running: .*configure_task_monitor"
    else:
        wait_for(lambda: handle.status_sync() is TaskStatus.RUNNING, WAIT, what="running")
        expected = r"did not finish within 0.2 s \(status: running\)"
    with pytest.raises(TimeoutError, match=expected):
        await handle.result(timeout=0.2)
    assert await handle.result(timeout=WAIT) == 3.0
