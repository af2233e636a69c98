"""``get_handle(task_id)`` on the testing backends (``eager_tasks``, ``capture_tasks``): the
same handle, status and result as on the real ones (SPEC §10.7)."""

from __future__ import annotations

import pytest

from pacificpy.background import TaskHandle, TaskStatus, get_handle
from pacificpy.background.decorators import background
from pacificpy.testing import capture_tasks, eager_tasks


@background
def double(x: int) -> int:
    return 2 * x


def test_eager_tasks_get_handle() -> None:
    with eager_tasks():
        handle = double.delay(21)
        found = get_handle(handle.id)
        assert type(found) is TaskHandle and found.name == double.name
        assert found.status_sync() is TaskStatus.COMPLETED
        assert found.result_sync(timeout=1) == 42
        assert get_handle("nope").status_sync() is None
        with pytest.raises(TimeoutError, match="status None"):
            get_handle("nope").result_sync(timeout=0.5)


def test_capture_tasks_get_handle_before_and_after_run_all() -> None:
    with capture_tasks() as captured:
        handle = double.delay(5)
        found = get_handle(handle.id)
        assert found.status_sync() is TaskStatus.QUEUED
        with pytest.raises(TimeoutError, match=r"still queued after 0\.5 s: .*run_all\(\)"):
            found.result_sync(timeout=0.5)
        captured.run_all()
        assert found.status_sync() is TaskStatus.COMPLETED
        assert found.result_sync(timeout=1) == 10
