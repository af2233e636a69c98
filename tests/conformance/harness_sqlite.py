"""The SQLite backend in the conformance suite, with its in-process workers: the test
process leases and runs the tasks (as an app serving them would), from a fresh file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pacificpy.background.backend import BackgroundBackend, SQLiteBackgroundBackend
from pacificpy.background.config import configured_backend
from pacificpy.background.decorators import configure_background_tasks
from tests.conformance.harness import FLOW_LEASE, SIGNING_KEY, Harness
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


class _Threads:
    def kill(self) -> None:
        raise NotImplementedError("the in-process SQLite workers are the test process")


@contextmanager
def _workers(queue: str, slots: int, processes: int) -> Iterator[_Threads]:
    """``Harness.workers``: a fresh backend on the run's file consuming ``queue`` with
    ``slots`` threads and no rows leased ahead, configured for the block."""
    before = configured_backend()
    backend = SQLiteBackgroundBackend(
        os.environ[PATH_VARIABLE], slots, queues=[queue], prefetch=0, lease=5.0,
        shutdown_timeout=5.0,
    )  # fmt: skip
    configure_background_tasks(backend, signing_key=SIGNING_KEY, concurrency_lease=FLOW_LEASE)
    try:
        backend.start()
        yield _Threads()
    finally:
        backend.shutdown_sync(timeout=5)
        if before is not None:
            configure_background_tasks(before, signing_key=SIGNING_KEY)


def make_harness(redis_server: RedisServer) -> Iterator[Harness]:
    os.environ[PATH_VARIABLE] = str(
        Path(tempfile.mkdtemp(prefix="pacificpy-sqlite-conformance-")) / "tasks.db"
    )
    yield Harness(
        name="sqlite",
        make_backend=make_backend,
        inject_raw=inject,
        workers=_workers,
        skips={
            "concurrency_slot_of_a_killed_worker_expires": "its workers are threads of the "
            "test process: none can be killed alone; the sqlite_proc harness runs it, and "
            "tests/background/backends/test_sqlite_flow.py covers a lease not renewed",
            "queue_length_unconsumed": "in-process workers consume every queue, so none "
            "stays unconsumed; the sqlite_proc harness (workers consume 'default') runs it",
            "terminate_kills_the_process_running_it": "its workers are threads and an event "
            "loop, which cannot be killed; the cancel reaches the run "
            "(test_a_running_sync_task_sees_cancelled)",
        },
    )
