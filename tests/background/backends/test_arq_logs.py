"""What a real ARQ worker logs (in process, ``Worker(burst=True)``): stock arq lists each job
by its PacificPy task and a short preview of its arguments, not the raw message; PacificPy
logs the success at INFO; a sync task past its timeout is said to keep running."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from arq.connections import RedisSettings

from pacificpy.background.backends.arq_backend import ARQBackgroundBackend
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.errors import TaskTimeout
from tests.background.backends._arq_procs import run_burst
from tests.support.redis_server import RedisServer

pytestmark = [
    pytest.mark.redis,
    pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning"),
]

DB = 5
WAIT = 30.0
release = threading.Event()


@background
def arq_log_greet(email: str, password: str, *, subject: str = "Hi") -> str:
    return f"{subject} {email}"


@background(timeout=0.1)
def arq_log_overrun() -> str:
    assert release.wait(WAIT)
    return "late"


@pytest.fixture
def backend(redis_server: RedisServer) -> Iterator[ARQBackgroundBackend]:
    if not redis_server.is_running():
        redis_server.start()
    url = redis_server.url.rpartition("/")[0] + f"/{DB}"
    redis.Redis.from_url(url).flushdb()
    b = ARQBackgroundBackend(redis_settings=RedisSettings.from_dsn(url), shutdown_timeout=1.0)
    configure_background_tasks(b)
    release.clear()
    yield b
    release.set()
    b.shutdown_sync()


async def _burst(backend: ARQBackgroundBackend, **overrides: Any) -> None:
    await run_burst(backend, **overrides)


async def test_stock_arq_lists_the_task_and_its_arguments(
    backend: ARQBackgroundBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="arq.worker")
    caplog.set_level(logging.INFO, logger="pacificpy.background")
    handle = await arq_log_greet.delay("ann@example.com", "hunter2", subject="Yo")
    await _burst(backend)
    assert await handle.result(timeout=WAIT) == "Yo ann@example.com"
    starts = [
        r.getMessage() for r in caplog.records if r.name == "arq.worker" and "→" in r.getMessage()
    ]
    (start,) = starts
    assert f"{handle.id}:pacificpy({arq_log_greet.name}('ann@example.com', '***'" in start, start
    assert "hunter2" not in caplog.text  # a secret never reaches the log
    assert "b'" not in start and '"v"' not in start  # not the raw message
    done = [
        r
        for r in caplog.records
        if r.name == "pacificpy.background" and r.getMessage().startswith("task ")
    ]
    assert [r.levelno for r in done] == [logging.INFO]
    assert done[0].getMessage().startswith(f"task {arq_log_greet.name} {handle.id} completed in ")


async def test_a_sync_task_past_its_timeout_is_said_to_run_on(
    backend: ARQBackgroundBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pacificpy.background")
    handle = await arq_log_overrun.delay()
    await _burst(backend)
    with pytest.raises(TaskTimeout):
        await handle.result(timeout=WAIT)
    messages = [r.getMessage() for r in caplog.records if handle.id in r.getMessage()]
    assert any(
        "passed its timeout of 0.1s" in m and "keeps running until the function returns" in m
        for m in messages
    ), messages
    assert f"task {arq_log_overrun.name} {handle.id} timed out after 0.1s (attempt 1/1)" in messages
