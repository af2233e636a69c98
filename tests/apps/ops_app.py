"""The worker module of the operability tests (health, worker registry, autoscaling
metrics): ``celery -A tests.apps.ops_app worker``, ``arq tests.apps.ops_app.WorkerSettings``
or ``pacificpy worker tests.apps.ops_app``; for SQLite, ``python -c "from tests.apps import
ops_app; ops_app.serve()"`` is a process running in-process workers, as an app would.

A worker process configures the backend named by ``PACIFICPY_OPS_BACKEND`` (``celery``,
``arq`` or ``sqlite``) on ``PACIFICPY_TEST_REDIS`` (the file in ``PACIFICPY_TEST_SQLITE``
for SQLite) with a heartbeat every :data:`HEARTBEAT` seconds; the test process calls
:func:`configure` itself (its Redis changes from test to test).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import redis

from pacificpy.background.decorators import background, configure_background_tasks

#: Seconds between two heartbeats of the tests' workers.
HEARTBEAT = 0.5


@background
def ops_sleep(key: str, seconds: float) -> str:
    """Say it started (``ops:started:<key>`` in the test's Redis), then sleep."""
    redis.Redis.from_url(os.environ["PACIFICPY_TEST_REDIS"]).set(f"ops:started:{key}", os.getpid())
    time.sleep(seconds)
    return key


@background
def ops_add(a: int, b: int) -> int:
    return a + b


@background
def ops_block(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def configure(kind: str, url: str, *, consume: bool = True) -> Any:
    """Configure the ``kind`` backend on ``url`` (a file for SQLite) in this process; return
    it. ``consume`` (SQLite): run tasks in this process."""
    if kind == "sqlite":
        from pacificpy.background.backend import SQLiteBackgroundBackend

        backend: Any = SQLiteBackgroundBackend(
            url, 2, consume=consume, lease=2.0, shutdown_timeout=5.0
        )
    elif kind == "celery":
        from celery import Celery

        from pacificpy.background.backend import CeleryBackgroundBackend

        app = Celery("pacificpy-ops", broker=url)
        app.conf.update(worker_hijack_root_logger=False, worker_redirect_stdouts=False)
        backend = CeleryBackgroundBackend(celery_app=app)
    else:
        from arq.connections import RedisSettings

        from pacificpy.background.backend import ARQBackgroundBackend

        backend = ARQBackgroundBackend(
            redis_settings=RedisSettings.from_dsn(url), in_progress_timeout=2.0,
            shutdown_timeout=5.0,
        )  # fmt: skip
    configure_background_tasks(backend, heartbeat_interval=HEARTBEAT)
    return backend


def serve() -> None:
    """Run the configured backend's in-process workers until killed (an app's startup)."""

    async def forever() -> None:
        await backend.startup()
        print("serving", flush=True)
        await asyncio.Event().wait()

    asyncio.run(forever())


_kind = os.environ.get("PACIFICPY_OPS_BACKEND")
if _kind == "sqlite":
    backend = configure(_kind, os.environ["PACIFICPY_TEST_SQLITE"])
elif _kind:
    backend = configure(_kind, os.environ["PACIFICPY_TEST_REDIS"])
    if _kind == "celery":
        celery_app = backend.celery_app
    else:
        WorkerSettings = backend.worker_settings()
