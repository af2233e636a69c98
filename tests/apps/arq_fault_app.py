"""An ARQ worker module for the fault tests: a short in-progress lease, few deliveries.

``PACIFICPY_FAULT_REDIS`` is the Redis URL (database included); side effects go there too.
"""

from __future__ import annotations

import os
import signal
import time

import redis
from arq.connections import RedisSettings

from pacificpy.background import current_task
from pacificpy.background.backend import ARQBackgroundBackend
from pacificpy.background.decorators import background, configure_background_tasks

URL = os.environ["PACIFICPY_FAULT_REDIS"]
LEASE = 1.0
MAX_DELIVERIES = 2
_client: list[redis.Redis] = []


def store() -> redis.Redis:
    if not _client:
        _client.append(redis.Redis.from_url(URL))
    return _client[0]


def make_backend() -> ARQBackgroundBackend:
    return ARQBackgroundBackend(
        redis_settings=RedisSettings.from_dsn(URL),
        in_progress_timeout=LEASE,
        max_deliveries=MAX_DELIVERIES,
        shutdown_timeout=5.0,
    )


@background
def hang_first_time(key: str) -> dict[str, int]:
    """Hang on the first delivery (the test kills the worker then); return on the next."""
    runs = int(store().incr(f"fault:{key}:runs"))
    store().set(f"fault:{key}:pid:{runs}", os.getpid())
    if runs == 1:
        time.sleep(60)
    ctx = current_task()
    assert ctx is not None
    return {"runs": runs, "pid": os.getpid(), "attempt": ctx.attempt}


@background
def die(key: str) -> None:
    """Kill this worker process, every time: a poison message."""
    store().incr(f"fault:{key}:runs")
    os.kill(os.getpid(), signal.SIGKILL)


@background
def add(a: int, b: int) -> int:
    return a + b


backend = make_backend()
configure_background_tasks(backend)
WorkerSettings = backend.worker_settings()
