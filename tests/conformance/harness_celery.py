"""The Celery backend in the conformance suite: a real ``celery worker`` subprocess (prefork
pool) on the suite's redis-server, which is both the broker and PacificPy's state store.

:class:`CeleryWorker` (also used by the Celery fault tests) runs
``celery -A tests.conformance.celery_app worker`` in its own process group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import TracebackType

from celery import Celery

from pacificpy.background.backend import BackgroundBackend, CeleryBackgroundBackend
from tests.conformance.harness import FLOW_LEASE, Harness
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]


class CeleryWorker:
    """A ``celery worker`` subprocess for ``tests.conformance.celery_app``.

    Args:
        redis_url: broker and state Redis (``PACIFICPY_TEST_REDIS`` of the worker).
        concurrency: prefork processes.
        visibility_timeout: broker visibility timeout, seconds (kombu's default if None).
        app: the ``-A`` module.
        extra_args: more worker options.
        cwd: working directory (the repository root by default).
        broker_url: the broker (``PACIFICPY_TEST_BROKER``) when it is not ``redis_url``.
        state_url: where the state lives when not in ``redis_url`` (``PACIFICPY_TEST_STATE``).
    """

    def __init__(
        self,
        redis_url: str,
        *,
        concurrency: int = 2,
        visibility_timeout: float | None = None,
        app: str = "tests.conformance.celery_app",
        extra_args: Sequence[str] = (),
        cwd: Path | None = None,
        command: Sequence[str] | None = None,
        broker_url: str | None = None,
        state_url: str | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.name = f"pp-{uuid.uuid4().hex[:8]}@%h"
        self.cwd = cwd or ROOT
        self.command = list(command) if command else [
            sys.executable, "-m", "celery", "-A", app, "worker",
            "-P", "prefork", f"--concurrency={concurrency}", "--loglevel=INFO",
            "-n", self.name, "--without-gossip", "--without-mingle", "--without-heartbeat",
            *extra_args,
        ]  # fmt: skip
        env = dict(os.environ)
        env["PACIFICPY_TEST_REDIS"] = redis_url
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        env.pop("PACIFICPY_TEST_VISIBILITY_TIMEOUT", None)
        for name, value in (
            ("PACIFICPY_TEST_BROKER", broker_url),
            ("PACIFICPY_TEST_STATE", state_url),
        ):
            env.pop(name, None)
            if value is not None:
                env[name] = value
        if visibility_timeout is not None:
            env["PACIFICPY_TEST_VISIBILITY_TIMEOUT"] = str(visibility_timeout)
        self.env = env
        fd, path = tempfile.mkstemp(prefix="pacificpy-celery-", suffix=".log")
        os.close(fd)
        self.log_path = Path(path)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> CeleryWorker:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 60.0, start: int = 0) -> None:
        """Wait until ``text`` appears in the log (after offset ``start``)."""
        deadline = time.monotonic() + timeout
        while text not in self.log()[start:]:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"celery worker exited with {self.proc.returncode}:\n{self.log()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{text!r} not in the worker log:\n{self.log()[-4000:]}")
            time.sleep(0.05)

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.wait_for_log(" ready.", timeout)

    def signal(self, signum: int, group: bool = False) -> None:
        assert self.proc is not None
        if group:
            os.killpg(self.proc.pid, signum)
        else:
            self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # leftover pool processes
        except ProcessLookupError:
            pass
        if proc.poll() is None:
            proc.wait(10)

    def close(self) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> CeleryWorker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def inject(backend: BackgroundBackend, data: bytes, queue: str) -> None:
    assert isinstance(backend, CeleryBackgroundBackend)
    backend.submit_raw(data, queue=queue)


class _FlowWorkers:
    def __init__(self, workers: list[CeleryWorker]) -> None:
        self.workers = workers

    def kill(self) -> None:
        for worker in self.workers:
            worker.signal(signal.SIGKILL, group=True)  # the main process and its pool
            worker.wait(30)


def flow_workers(redis_url: str, app: str = "tests.conformance.flow_celery_app") -> object:
    """``Harness.workers``: ``processes`` Celery workers of ``app`` on ``queue`` (prefork
    pools)."""

    @contextmanager
    def workers(queue: str, slots: int, processes: int) -> Iterator[_FlowWorkers]:
        with ExitStack() as stack:
            started = []
            for i in range(processes):
                worker = CeleryWorker(
                    redis_url,
                    concurrency=slots // processes + (i < slots % processes),
                    app=app,
                    extra_args=["-Q", queue],
                )
                worker.env["PACIFICPY_TEST_LEASE"] = str(FLOW_LEASE)
                started.append(stack.enter_context(worker))
            for worker in started:
                worker.wait_ready()
            yield _FlowWorkers(started)

    return workers


def make_harness(redis_server: RedisServer) -> Iterator[Harness]:
    celery_app = Celery("pacificpy-conformance", broker=redis_server.url)
    with CeleryWorker(redis_server.url, concurrency=4) as worker:
        worker.wait_ready()
        yield Harness(
            name="celery",
            make_backend=lambda: CeleryBackgroundBackend(celery_app=celery_app),
            inject_raw=inject,
            workers=flow_workers(redis_server.url),  # type: ignore[arg-type]
        )
