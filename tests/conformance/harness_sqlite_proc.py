"""The SQLite backend in the conformance suite with separate worker processes: the test
process only enqueues (``consume=False``) and ``pacificpy worker
tests.conformance.sqlite_proc_app --workers 2`` runs the tasks from the same file. The
flow-control tests start their own ``pacificpy worker`` on a queue of their own
(:func:`flow_workers`)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pacificpy.background.backend import SQLiteBackgroundBackend
from tests.conformance.harness import FLOW_LEASE, Harness
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


def _wait_started(log: Path, proc: subprocess.Popen[bytes], count: int = WORKERS) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if proc.poll() is not None:
            raise RuntimeError(f"pacificpy worker exited with {proc.returncode}:\n{text[-3000:]}")
        if text.count("SQLite worker (pid") >= count:
            return
        time.sleep(0.05)
    raise RuntimeError(f"SQLite workers did not start within {STARTUP_TIMEOUT}s:\n{text[-3000:]}")


class _FlowWorkers:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log

    def kill(self) -> None:
        """SIGKILL the supervisor (first: it would restart a worker), then each worker
        process (each in a session of its own; pids from their start line in the log)."""
        pids = [int(p) for p in re.findall(r"SQLite worker \(pid (\d+)\)", self.log.read_text())]
        self.proc.kill()
        self.proc.wait(30)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def flow_workers(env: dict[str, str], logdir: Path) -> object:
    """``Harness.workers``: ``pacificpy worker tests.conformance.flow_sqlite_app --workers
    <processes> -Q <queue>``, ``slots // processes`` threads in each process."""

    @contextmanager
    def workers(queue: str, slots: int, processes: int) -> Iterator[_FlowWorkers]:
        log = logdir / f"flow-{queue}.log"
        worker_env = {
            **env,
            "PACIFICPY_TEST_FLOW_SLOTS": str(max(1, slots // processes)),
            "PACIFICPY_TEST_LEASE": str(FLOW_LEASE),
        }
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", "from pacificpy.cli import main; main()", "worker",
                 "tests.conformance.flow_sqlite_app", "--workers", str(processes), "-Q", queue],
                cwd=REPO_ROOT, env=worker_env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            _wait_started(log, proc, processes)
            yield _FlowWorkers(proc, log)
        finally:
            _stop(proc)

    return workers


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
            workers=flow_workers(env, path.parent),  # type: ignore[arg-type]
            skips={
                "terminate_kills_the_process_running_it": "its workers run tasks on threads "
                "and an event loop, which cannot be killed; the cancel reaches the run "
                "(test_a_running_sync_task_sees_cancelled)",
            },
        )
    finally:
        _stop(proc)
