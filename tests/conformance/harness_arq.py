"""ARQ in the conformance suite: real worker subprocesses against the suite's redis-server.

Two workers consume the default queue: one started with the stock command
(``arq tests.conformance.arq_app.WorkerSettings``), one with ``pacificpy worker``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from arq.connections import RedisSettings

from pacificpy.background.backend import BackgroundBackend
from pacificpy.background.backends.arq_backend import ARQBackgroundBackend, arq_queue_name
from tests.conformance.harness import FLOW_LEASE, Harness
from tests.support.redis_server import RedisServer

REPO_ROOT = Path(__file__).resolve().parents[2]
ARQ_DB = "1"
STARTUP_TIMEOUT = 60.0


def redis_settings() -> RedisSettings:
    """The suite's Redis (``PACIFICPY_TEST_REDIS``), in the database kept for ARQ."""
    settings = RedisSettings.from_dsn(os.environ["PACIFICPY_TEST_REDIS"])
    settings.database = int(os.environ.get("PACIFICPY_TEST_ARQ_DB", ARQ_DB))
    return settings


def make_backend() -> ARQBackgroundBackend:
    """The backend every process of the ARQ conformance run uses (test process, workers)."""
    return ARQBackgroundBackend(redis_settings=redis_settings(), shutdown_timeout=5.0)


def _inject(backend: BackgroundBackend, data: bytes, queue: str) -> None:
    """Write ``data`` as the value of an ARQ job, exactly where a worker reads it."""
    assert isinstance(backend, ARQBackgroundBackend)
    job_id = os.urandom(16).hex()
    client = backend.state.sync
    client.set(f"arq:job:{job_id}", data, px=3_600_000)
    client.zadd(arq_queue_name(queue), {job_id: int(time.time() * 1000)})


def _wait_started(logs: list[Path], procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"ARQ worker exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
                )
        if all("Starting worker" in log.read_text(errors="replace") for log in logs):
            return
        time.sleep(0.05)
    tails = "\n".join(log.read_text(errors="replace")[-2000:] for log in logs)
    raise RuntimeError(f"ARQ workers did not start within {STARTUP_TIMEOUT}s:\n{tails}")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _FlowWorkers:
    def __init__(self, procs: list[subprocess.Popen[bytes]]) -> None:
        self.procs = procs

    def kill(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(30)


def flow_workers(env: dict[str, str], logdir: Path) -> object:
    """``Harness.workers``: ``processes`` stock ``arq`` workers on ``queue``."""

    @contextmanager
    def workers(queue: str, slots: int, processes: int) -> Iterator[_FlowWorkers]:
        procs: list[subprocess.Popen[bytes]] = []
        logs: list[Path] = []
        try:
            for i in range(processes):
                log = logdir / f"flow-{queue}-{i}.log"
                logs.append(log)
                worker_env = {
                    **env,
                    "PACIFICPY_TEST_FLOW_QUEUE": queue,
                    "PACIFICPY_TEST_FLOW_SLOTS": str(slots // processes + (i < slots % processes)),
                    "PACIFICPY_TEST_LEASE": str(FLOW_LEASE),
                }
                command = [
                    sys.executable,
                    "-m",
                    "arq",
                    f"{__package__}.flow_arq_app.WorkerSettings",
                ]
                with open(log, "wb") as out:
                    proc = subprocess.Popen(
                        command, cwd=REPO_ROOT, env=worker_env, stdout=out, stderr=subprocess.STDOUT
                    )
                procs.append(proc)
            _wait_started(logs, procs)
            yield _FlowWorkers(procs)
        finally:
            _stop(procs)

    return workers


def make_harness(redis_server: RedisServer) -> Iterator[Harness]:
    env = {
        **os.environ,
        "PACIFICPY_TEST_REDIS": redis_server.url,
        "PACIFICPY_TEST_ARQ_DB": ARQ_DB,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    os.environ["PACIFICPY_TEST_ARQ_DB"] = ARQ_DB
    db_url = redis_server.url.rpartition("/")[0] + "/" + ARQ_DB
    redis.Redis.from_url(db_url).flushdb()
    logdir = Path(tempfile.mkdtemp(prefix="pacificpy-arq-conformance-"))
    commands = [
        [sys.executable, "-m", "arq", "tests.conformance.arq_app.WorkerSettings"],
        [sys.executable, "-c", "from pacificpy.cli import main; main()",
         "worker", "tests.conformance.arq_app"],
    ]  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        for i, cmd in enumerate(commands):
            log = logdir / f"worker-{i}.log"
            logs.append(log)
            with open(log, "wb") as out:
                procs.append(
                    subprocess.Popen(
                        cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
                    )
                )
        _wait_started(logs, procs)
        yield Harness(
            name="arq",
            make_backend=make_backend,
            inject_raw=_inject,
            workers=flow_workers(env, logdir),  # type: ignore[arg-type]
            skips={
                "terminate_kills_the_process_running_it": "an ARQ worker runs tasks on its loop "
                "and threads, which cannot be killed; the cancel reaches the run "
                "(test_a_running_sync_task_sees_cancelled)",
            },
        )
    finally:
        _stop(procs)
