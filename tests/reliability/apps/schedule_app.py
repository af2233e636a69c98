"""The app and worker module of the periodic-task process tests
(``tests/reliability/test_schedules_processes.py``).

Served by uvicorn (``tests.reliability.apps.schedule_app:app``) and run by ``pacificpy worker
tests.reliability.apps.schedule_app`` (ARQ). One task runs every second; each run appends
``<slot> <pid> <time>`` to ``PACIFICPY_SCHED_RUNS`` (one ``write`` of an ``O_APPEND`` file:
lines of concurrent processes never mix), and the scheduler's start in each process is
appended to ``PACIFICPY_SCHED_EVENTS`` with its Unix time.

Environment: ``PACIFICPY_SCHED_BACKEND`` (``arq`` or ``celery``: Redis at
``PACIFICPY_SCHED_REDIS``;
``sqlite``: the file ``PACIFICPY_SCHED_DB``, tasks run in the processes with
``PACIFICPY_SCHED_CONSUME=1``), ``PACIFICPY_SCHED_MISSED`` (``skip`` or ``once``).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time

from pacificpy import PacificPy
from pacificpy.background import background, current_task
from pacificpy.background.decorators import configure_background_tasks

RUNS = os.environ["PACIFICPY_SCHED_RUNS"]
KIND = os.environ["PACIFICPY_SCHED_BACKEND"]

if KIND == "arq":
    from arq.connections import RedisSettings

    from pacificpy.background.backend import ARQBackgroundBackend

    backend = ARQBackgroundBackend(
        redis_settings=RedisSettings.from_dsn(os.environ["PACIFICPY_SCHED_REDIS"]),
        shutdown_timeout=5.0,
    )
elif KIND == "celery":
    from celery import Celery

    from pacificpy.background.backend import CeleryBackgroundBackend

    celery_app = Celery("pacificpy-schedules", broker=os.environ["PACIFICPY_SCHED_REDIS"])
    backend = CeleryBackgroundBackend(celery_app=celery_app, shutdown_timeout=5.0)
else:
    from pacificpy.background.backends.sqlite.backend import SQLiteBackgroundBackend

    backend = SQLiteBackgroundBackend(
        os.environ["PACIFICPY_SCHED_DB"],
        max_workers=4,
        consume=os.environ.get("PACIFICPY_SCHED_CONSUME") == "1",
        shutdown_timeout=5.0,
    )
configure_background_tasks(backend)

# When each process's scheduler started (its "PacificPy scheduler running" line), in Unix
# time: the test tells missed slots from live ones with it.
_events = logging.FileHandler(os.environ["PACIFICPY_SCHED_EVENTS"])
_events.setFormatter(logging.Formatter("%(created).6f %(process)d %(message)s"))
_log = logging.getLogger("pacificpy.background.schedules")
_log.addHandler(_events)
_log.setLevel(logging.INFO)


def _append(line: str) -> None:
    fd = os.open(RUNS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@background(
    name="sched.tick",
    schedule=dt.timedelta(seconds=1),
    missed=os.environ.get("PACIFICPY_SCHED_MISSED", "skip"),
)
def tick() -> None:
    ctx = current_task()
    assert ctx is not None and ctx.scheduled_for is not None
    _append(f"{ctx.scheduled_for.timestamp():.3f} {os.getpid()} {time.time():.3f}\n")


app = PacificPy()


@app.get("/")
def index() -> dict[str, str]:
    return {"backend": backend.kind}
