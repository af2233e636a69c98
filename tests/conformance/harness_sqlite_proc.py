"""The SQLite backend in the conformance suite with separate worker processes: the test
process only enqueues (``consume=False``) and ``pacificpy worker
tests.conformance.sqlite_proc_app --workers 2`` runs the tasks from the same file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pacificpy.background.backend import SQLiteBackgroundBackend
from tests.conformance.harness import Harness
from tests.conformance.harness_sqlite import inject
from tests.support.redis_server import RedisServer

REPO_ROOT = Path(__file__).resolve().parents[2]
PATH_VARIABLE = "PACIFICPY_TEST_SQLITE_PROC"
STARTUP_TIMEOUT = 60.0
WORKERS = 2


def make_backend() -> SQLiteBackgroundBackend:
    """The app's backend: it enqueues; the worker processes consume ``default``."""
    return SQLiteBackgroundBackend(
        os.environ[PATH_VARIABLE], 4, consume=False, lease=5.0, shutdown_timeout=5.0
    )


def _wait_started(log: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if proc.poll() is not None:
            raise RuntimeError(f"pacificpy worker exited with {proc.returncode}:\n{text[-3000:]}")
        if text.count("SQLite worker (pid") >= WORKERS:
            return
        time.sleep(0.05)
    raise RuntimeError(f"SQLite workers did not start within {STARTUP_TIMEOUT}s:\n{text[-3000:]}")


def make_harness(redis_server: RedisServer) -> Iterator[Harness]:
    path = Path(tempfile.mkdtemp(prefix="pacificpy-sqlite-proc-conformance-")) / "tasks.db"
    os.environ[PATH_VARIABLE] = str(path)
    env = {
        **os.environ,
        "PACIFICPY_TEST_REDIS": redis_server.url,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    log = path.with_name("workers.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from pacificpy.cli import main; main()", "worker",
             "tests.conformance.sqlite_proc_app", "--workers", str(WORKERS)],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_started(log, proc)
        yield Harness(
            name="sqlite_proc",
            make_backend=make_backend,
            inject_raw=inject,
            skips={
                "terminate_kills_the_process_running_it": "its workers run tasks on threads "
                "and an event loop, which cannot be killed; the cancel reaches the run "
                "(test_a_running_sync_task_sees_cancelled)",
            },
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
