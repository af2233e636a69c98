"""The SQLite backend in the conformance suite, with its in-process workers: the test
process leases and runs the tasks (as an app serving them would), from a fresh file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pacificpy.background.backend import BackgroundBackend, SQLiteBackgroundBackend
from tests.conformance.harness import Harness
from tests.support.redis_server import RedisServer

#: Where every process of the run finds the file (the harness sets it).
PATH_VARIABLE = "PACIFICPY_TEST_SQLITE"


def make_backend(*, consume: bool = True) -> SQLiteBackgroundBackend:
    """The backend on the run's file (``tests.conformance.sqlite_app`` makes the same)."""
    return SQLiteBackgroundBackend(
        os.environ[PATH_VARIABLE], 4, consume=consume, lease=5.0, shutdown_timeout=5.0
    )


def inject(backend: BackgroundBackend, data: bytes, queue: str) -> None:
    """Commit ``data`` as a row, exactly where a worker leases messages from."""
    assert isinstance(backend, SQLiteBackgroundBackend)
    backend.submit_raw(data, queue=queue)


def make_harness(redis_server: RedisServer) -> Iterator[Harness]:
    os.environ[PATH_VARIABLE] = str(
        Path(tempfile.mkdtemp(prefix="pacificpy-sqlite-conformance-")) / "tasks.db"
    )
    yield Harness(
        name="sqlite",
        make_backend=make_backend,
        inject_raw=inject,
        skips={
            "queue_length_unconsumed": "in-process workers consume every queue, so none "
            "stays unconsumed; the sqlite_proc harness (workers consume 'default') runs it",
            "terminate_kills_the_process_running_it": "its workers are threads and an event "
            "loop, which cannot be killed; the cancel reaches the run "
            "(test_a_running_sync_task_sees_cancelled)",
        },
    )
