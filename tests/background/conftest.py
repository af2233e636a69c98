"""Fixtures shared by the task-layer tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pacificpy.background.decorators import configure_background_tasks
from pacificpy.background.local import LocalExecutor, get_local_executor


@pytest.fixture
def executor() -> Iterator[LocalExecutor]:
    """A configured local executor with two workers, shut down after the test."""
    ex = get_local_executor(max_workers=2)
    configure_background_tasks(ex)
    yield ex
    ex.shutdown_sync(timeout=5)
