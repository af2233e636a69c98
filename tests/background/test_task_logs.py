"""What a worker's log says about each task: one INFO line per success, one WARNING line per
retry (no traceback), one ERROR line with the traceback for the final failure, timeouts
told once, and a sync task past its timeout said to keep running (local and ARQ)."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator

import pytest

from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import get_local_executor
from pacificpy.errors import TaskFailed, TaskTimeout

WAIT = 30.0
LOGGER = "pacificpy.background"
release = threading.Event()


@background
def log_add(a: int, b: int) -> int:
    return a + b


@background(retries=2, retry_backoff=0.01, retry_jitter=False)
def log_boom() -> None:
    raise ValueError("boom")


@background(timeout=0.1)
async def log_async_overrun() -> None:
    import asyncio

    await asyncio.Event().wait()  # never set: only the timeout ends it


@background(timeout=0.1)
def log_sync_overrun() -> str:
    assert release.wait(WAIT)
    return "late"


@pytest.fixture(autouse=True)
def _local() -> Iterator[None]:
    executor = get_local_executor(2, shutdown_timeout=5.0)
    configure_background_tasks(executor)
    release.clear()
    yield
    release.set()  # a stuck sync task returns
    executor.shutdown_sync()


def _lines(caplog: pytest.LogCaptureFixture, task_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and task_id in r.getMessage()]


def test_a_success_logs_one_info_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    handle = log_add.delay(1, 2)
    assert handle.result_sync(timeout=WAIT) == 3
    (line,) = _lines(caplog, handle.id)
    assert line.levelno == logging.INFO
    assert re.fullmatch(
        rf"task {re.escape(log_add.name)} {handle.id} completed in \d+\.\d{{3}}s \(attempt 1\)",
        line.getMessage(),
    ), line.getMessage()


def test_retries_log_one_line_each_and_the_final_failure_the_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    handle = log_boom.delay()
    with pytest.raises(TaskFailed):
        handle.result_sync(timeout=WAIT)
    lines = _lines(caplog, handle.id)
    assert [r.levelno for r in lines] == [logging.WARNING, logging.WARNING, logging.ERROR]
    name = re.escape(log_boom.name)
    for attempt, line in zip((1, 2), lines, strict=False):
        assert re.fullmatch(
            rf"task {name} {handle.id} failed \(attempt {attempt}/3\): ValueError: boom; "
            r"retrying in \d+\.\ds",
            line.getMessage(),
        ), line.getMessage()
        assert line.exc_info is None and not line.exc_text  # no traceback on a retry
    final = lines[-1]
    assert final.getMessage() == f"task {log_boom.name} {handle.id} failed (attempt 3/3): " + (
        "ValueError: boom"
    )
    assert final.exc_info is not None and final.exc_info[0] is ValueError
    assert "Traceback (most recent call last)" in caplog.text
    assert caplog.text.count("Traceback (most recent call last)") == 1


def test_a_timeout_is_told_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    handle = log_async_overrun.delay()
    with pytest.raises(TaskTimeout):
        handle.result_sync(timeout=WAIT)
    (line,) = _lines(caplog, handle.id)
    message = line.getMessage()
    assert (
        message == f"task {log_async_overrun.name} {handle.id} timed out after 0.1s (attempt 1/1)"
    )
    assert line.exc_info is None
    assert "TaskTimeout" not in caplog.text  # nothing repeats the type or the task's name


def test_a_sync_task_past_its_timeout_is_said_to_run_on(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    handle = log_sync_overrun.delay()
    with pytest.raises(TaskTimeout):
        handle.result_sync(timeout=WAIT)
    messages = [r.getMessage() for r in _lines(caplog, handle.id)]
    assert any("cannot be stopped" in m for m in messages), messages
    assert f"task {log_sync_overrun.name} {handle.id} timed out after 0.1s (attempt 1/1)" in (
        messages
    )
