"""SPEC §10.6 on every backend: the worker registry, readiness, and the oldest-task age.

What needs a Redis stop or a worker killed (503 while Redis is down, lost after 3
heartbeats, the age growing while no worker runs) is tested with processes of its own in
tests/background/backends/test_ops_workers.py (Celery, ARQ) and test_ops_sqlite.py; the
local executor's in tests/background/test_workers.py.
"""

from __future__ import annotations

import uuid

from pacificpy import PacificPy
from pacificpy.background.workers import WorkerInfo, list_workers
from pacificpy.testing import TestClient
from tests.conformance import tasks
from tests.conformance.harness import Harness
from tests.support.wait import wait_for

WAIT = 30.0


def test_a_live_worker_of_the_backend_is_registered(harness: Harness) -> None:
    backend = harness.backend
    assert backend is not None
    # In-process workers (local, SQLite) start with the first task.
    assert tasks.add.delay(1, 2).result_sync(timeout=WAIT) == 3

    def live() -> list[WorkerInfo]:
        return [w for w in list_workers(backend.state) if w.backend == backend.kind]

    found = wait_for(live, WAIT, what=f"a registered {backend.kind} worker")
    assert all(not w.lost() for w in found)
    assert all(w.queues and w.pid > 0 and w.last_seen >= w.started_at for w in found)


def test_ready_when_the_backend_and_monitor_answer(harness: Harness) -> None:
    app = PacificPy()
    app.include_health()
    ready = TestClient(app).get("/healthz/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["backend"]["ok"] is True


def test_no_oldest_task_in_a_queue_nobody_used(harness: Harness) -> None:
    backend = harness.backend
    assert backend is not None
    assert backend.oldest_waiting_sync(f"unused-{uuid.uuid4().hex[:8]}") is None
