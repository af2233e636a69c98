"""Cancel on the SQLite backend across processes: this process only enqueues and cancels;
an app process on the same file runs the tasks, and its watcher (a poll of new tombstones)
reaches the running ones. A task cancelled before its delivery never starts there."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pacificpy.background.backends.sqlite import SQLiteBackgroundBackend
from pacificpy.background.decorators import configure_background_tasks
from pacificpy.errors import TaskCancelled
from pacificpy.types import TaskStatus
from tests.conformance import tasks
from tests.conformance.harness import SIGNING_KEY
from tests.conformance.harness_sqlite import PATH_VARIABLE
from tests.support.uvicorn_server import REPO_ROOT
from tests.support.wait import wait_for

APP_PROCESS = """
import asyncio
import tests.conformance.sqlite_app as app

async def main():
    await app.backend.startup()
    print("serving", flush=True)
    await asyncio.sleep(300)

asyncio.run(main())
"""


@pytest.fixture
def producer(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[SQLiteBackgroundBackend]:
    path = Path(tempfile.mkdtemp(prefix="pacificpy-sqlite-cancel-")) / "tasks.db"
    monkeypatch.setenv(PATH_VARIABLE, str(path))
    monkeypatch.setenv("PACIFICPY_TEST_REDIS", redis_url)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, "-c", APP_PROCESS],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"serving"
        backend = SQLiteBackgroundBackend(path, consume=False, shutdown_timeout=5.0)
        configure_background_tasks(backend, signing_key=SIGNING_KEY)
        yield backend
        backend.shutdown_sync(timeout=5)
    finally:
        proc.kill()
        proc.wait(10)


def marked(what: str, task_id: str) -> bool:
    return bool(tasks.store().exists(f"pacificpy-test:{what}:{task_id}"))


@pytest.mark.parametrize(
    "task", [tasks.async_until_cancelled, tasks.sync_until_cancelled], ids=["async", "sync"]
)
def test_cancel_reaches_a_task_another_process_runs(
    producer: SQLiteBackgroundBackend, task: object
) -> None:
    handle = task.delay(60.0)  # type: ignore[attr-defined]
    wait_for(lambda: marked("started", handle.id), timeout=30, what="the task to start")
    started = time.monotonic()
    assert handle.cancel_sync() is True
    wait_for(lambda: marked("cancel-seen", handle.id), timeout=10, what="the cancel to arrive")
    assert time.monotonic() - started < 10
    with pytest.raises(TaskCancelled):
        handle.result_sync(30)
    assert handle.status_sync() is TaskStatus.CANCELLED
    assert handle.cancel_sync() is False


def test_a_task_cancelled_before_its_delivery_never_starts_there(
    producer: SQLiteBackgroundBackend,
) -> None:
    key = f"sqlite-cancel-{time.time_ns()}"
    handle = tasks.count.apply_async(args=(key,), countdown=1.0)
    assert handle.cancel_sync() is True
    later = tasks.add.apply_async(args=(1, 1), countdown=2.0)
    assert later.result_sync(30) == 2
    assert not tasks.store().exists(f"pacificpy-test:{key}")
    assert producer.queue_length_sync() == 0  # its row was delivered, refused and acked
    assert handle.status_sync() is TaskStatus.CANCELLED
