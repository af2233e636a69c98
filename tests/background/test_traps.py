"""The well-known traps of Starlette/FastAPI ``BackgroundTasks``, fixed (SPEC §3.3).

1. A failing task is logged with its traceback and recorded, and the other tasks run.
2. A client that disconnects does not cancel the tasks its request enqueued.
3. A blocking sync task does not stall responses.

(2) and (3) run against a real uvicorn process.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import socket
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from pacificpy import PacificPy
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import get_local_executor
from pacificpy.background.monitor import get_task_monitor
from pacificpy.routing import Request
from pacificpy.testing import TestClient
from pacificpy.types import TaskStatus
from tests.support.uvicorn_server import serve_app
from tests.support.wait import wait_for

results: list[int] = []


@background
def explode(n: int) -> None:
    raise RuntimeError(f"boom {n}")


@background
def record(n: int) -> int:
    results.append(n)
    return n


def test_failing_task_is_logged_recorded_and_others_run(caplog: pytest.LogCaptureFixture) -> None:
    results.clear()
    executor = get_local_executor(max_workers=2)
    configure_background_tasks(executor)
    app = PacificPy()
    handles: dict[str, Any] = {}

    @app.post("/work")
    async def work(request: Request) -> dict[str, Any]:
        handles["ok1"] = await record.delay(1)
        handles["bad"] = await explode.delay(7)
        handles["ok2"] = await record.delay(2)
        return {"ok": True}

    with caplog.at_level(logging.ERROR, logger="pacificpy.background"), TestClient(app) as client:
        assert client.post("/work").status_code == 200
        assert executor.join(timeout=10)
    assert sorted(results) == [1, 2]
    failures = [r for r in caplog.records if handles["bad"].id in r.getMessage()]
    assert failures, caplog.text
    assert failures[0].exc_info is not None
    assert "RuntimeError: boom 7" in caplog.text
    assert "Traceback (most recent call last)" in caplog.text
    monitor = get_task_monitor()
    bad = monitor.get(handles["bad"].id)
    assert bad is not None and bad.status is TaskStatus.FAILED
    assert bad.error is not None and "boom 7" in bad.error
    for key in ("ok1", "ok2"):
        rec = monitor.get(handles[key].id)
        assert rec is not None and rec.status is TaskStatus.COMPLETED


def test_client_disconnect_does_not_cancel_tasks(tmp_path: Path) -> None:
    with serve_app("tests.apps.traps_app:app", env={"PACIFICPY_TEST_DIR": str(tmp_path)}) as (
        base,
        _proc,
    ):
        parts = urlsplit(base)
        sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        sock.sendall(b"POST /disconnect/hangup HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n")
        # Hang up once the request is being handled (its sync task has started).
        wait_for((tmp_path / "hangup-sync.started").exists, 10, what="the sync task to start")
        sock.close()
        wait_for((tmp_path / "hangup-sync").exists, 15, what="the sync task, lost with its client?")
        wait_for(
            (tmp_path / "hangup-async").exists, 15, what="the async task (lost with its client?)"
        )


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:
        response.read()
        status: int = response.status
        return status


def test_blocking_sync_tasks_do_not_stall_responses(tmp_path: Path) -> None:
    # Ordering, not timing: every worker thread is held by a task until the test releases
    # it, and requests must be answered meanwhile (urlopen's 10 s is only a deadline).
    with serve_app("tests.apps.traps_app:app", env={"PACIFICPY_TEST_DIR": str(tmp_path)}) as (
        base,
        _proc,
    ):
        try:
            request = urllib.request.Request(base + "/block/8", method="POST", data=b"")
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
                body = json.loads(response.read())
            busy = min(8, body["workers"])

            def started() -> bool:
                return len(list(tmp_path.glob("block-*.started"))) >= busy

            wait_for(started, 30, what=f"{busy} blocking tasks to hold every worker")
            urls = [base + "/ok", base + "/ok-sync"] * 10
            with cf.ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(_get, urls))
            assert statuses == [200] * len(urls)
            assert not list(tmp_path.glob("block-*.done")), "a blocking task ended early"
        finally:
            (tmp_path / "release").touch()
        wait_for(
            lambda: len(list(tmp_path.glob("block-*.done"))) == 8, 30, what="the 8 tasks to end"
        )
