"""An enqueue that fails while nobody awaits its handle is not lost silently (SPEC §9).

Inside a running loop ``.delay()`` starts the enqueue at once; when the broker is down and
the caller never awaits the handle, the failure is logged at ERROR with the task's name and
id, and the monitor records the task as ``failed``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator

import pytest
from arq.connections import RedisSettings
from celery import Celery

from pacificpy.background import TaskStatus
from pacificpy.background.backend import BackgroundBackend
from pacificpy.background.backends.arq_backend import ARQBackgroundBackend
from pacificpy.background.backends.celery_backend import CeleryBackgroundBackend
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.monitor import get_task_monitor
from pacificpy.errors import EnqueueError
from tests.support.net import free_port

WAIT = 30.0


@background
def never_enqueued(n: int) -> int:
    return n


def _arq_down(port: int) -> BackgroundBackend:
    return ARQBackgroundBackend(redis_settings=RedisSettings(host="127.0.0.1", port=port))


def _celery_down(port: int) -> BackgroundBackend:
    app = Celery("down", broker=f"redis://127.0.0.1:{port}/0", set_as_current=False)
    return CeleryBackgroundBackend(celery_app=app)


@pytest.fixture(params=[_arq_down, _celery_down], ids=["arq", "celery"])
def down_backend(request: pytest.FixtureRequest) -> Iterator[BackgroundBackend]:
    """A Redis backend pointed at a port nothing listens on."""
    make: Callable[[int], BackgroundBackend] = request.param
    backend = make(free_port())
    configure_background_tasks(backend)
    yield backend
    backend.shutdown_sync(timeout=5)


async def _poll(predicate: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    """Yield to the loop until ``predicate()`` holds (the enqueue runs on this loop)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.01)


def _failure_logs(caplog: pytest.LogCaptureFixture, task_id: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno == logging.ERROR and task_id in r.getMessage() and "enqueue" in r.getMessage()
    ]


async def test_unawaited_failed_enqueue_is_logged_and_marked_failed(
    down_backend: BackgroundBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="pacificpy")
    handle = never_enqueued.delay(1)  # not awaited, on purpose
    monitor = get_task_monitor()

    def failed() -> bool:
        record = monitor.get(handle.id)
        return record is not None and record.status is TaskStatus.FAILED

    await _poll(failed, "the monitor to mark the lost enqueue failed")
    record = monitor.get(handle.id)
    assert record is not None
    assert record.name == never_enqueued.name
    assert "EnqueueError" in (record.error or "")
    await _poll(lambda: _failure_logs(caplog, handle.id), "the ERROR log of the lost enqueue")
    (log,) = _failure_logs(caplog, handle.id)
    assert never_enqueued.name in log.getMessage()
    # Awaiting the handle afterwards still raises the failure.
    with pytest.raises(EnqueueError):
        await handle
