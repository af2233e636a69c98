"""Cancel from the dashboard (``POST api/tasks/{id}/cancel``), and the ``cancelled`` and
progress figures it and ``/metrics`` show."""

from __future__ import annotations

import threading

from pacificpy import PacificPy
from pacificpy.background import current_task
from pacificpy.background.decorators import background
from pacificpy.background.local import LocalExecutor
from pacificpy.testing import TestClient
from pacificpy.types import TaskStatus
from tests.support.wait import wait_for

TOKEN = "dash-cancel-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
_release = threading.Event()


@background
def later(x: int) -> int:
    return x


@background
def halfway(steps: int) -> int:
    ctx = current_task()
    assert ctx is not None
    ctx.set_progress(steps // 2, steps, "half done")
    _release.wait(30)
    return steps


def client_for(token: str | None = TOKEN) -> TestClient:
    app = PacificPy()
    app.include_task_dashboard(token=token)
    app.include_metrics(token=TOKEN)
    return TestClient(app)


def test_cancel_route_cancels_and_counts(executor: LocalExecutor) -> None:
    client = client_for()
    handle = later.apply_async(args=(1,), countdown=60)
    url = f"/_tasks/api/tasks/{handle.id}/cancel"
    assert client.post(url).status_code == 401
    assert client.post(url, headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert handle.status_sync() is TaskStatus.QUEUED
    resp = client.post(url, headers=AUTH)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"cancelled": handle.id}
    assert handle.status_sync() is TaskStatus.CANCELLED
    again = client.post(url, headers=AUTH)
    assert again.status_code == 409
    assert "already finished" in again.json()["detail"]
    stats = client.get("/_tasks/api/stats", headers=AUTH).json()
    assert stats["counts"]["cancelled"] == 1
    record = client.get(f"/_tasks/api/tasks/{handle.id}", headers=AUTH).json()
    assert record["status"] == "cancelled"
    metrics = client.get("/metrics", headers=AUTH).text
    name = later.name
    assert f'pacificpy_tasks_total{{name="{name}",status="cancelled"}} 1.0' in metrics


def test_cancel_route_without_a_token_is_refused(executor: LocalExecutor) -> None:
    client = client_for(token=None)
    handle = later.apply_async(args=(1,), countdown=60)
    resp = client.post(f"/_tasks/api/tasks/{handle.id}/cancel")
    assert resp.status_code == 403
    assert handle.status_sync() is TaskStatus.QUEUED
    handle.cancel_sync()


def test_progress_shows_in_the_record(executor: LocalExecutor) -> None:
    _release.clear()
    client = client_for()
    handle = halfway.delay(10)
    try:
        wait_for(lambda: handle.progress_sync(), what="progress")
        assert handle.progress_sync() == (5.0, 10.0, "half done")
        record = client.get(f"/_tasks/api/tasks/{handle.id}", headers=AUTH).json()
        assert record["progress_done"] == 5.0
        assert record["progress_total"] == 10.0
        assert record["progress_message"] == "half done"
    finally:
        _release.set()
    assert handle.result_sync(10) == 10


def test_a_cancelled_countdown_holds_up_neither_join_nor_shutdown(executor: LocalExecutor) -> None:
    handle = later.apply_async(args=(1,), countdown=600)
    assert executor.queue_length_sync() == 1
    assert handle.cancel_sync() is True
    assert executor.queue_length_sync() == 0
    assert executor.join(timeout=5)
    executor.shutdown_sync(timeout=5)
    assert handle.status_sync() is TaskStatus.CANCELLED  # not abandoned at shutdown
