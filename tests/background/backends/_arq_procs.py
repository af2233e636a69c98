"""Worker subprocesses for the ARQ tests: start, wait for their logs, stop."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]
PACIFICPY = [sys.executable, "-c", "from pacificpy.cli import main; main()"]
ARQ = [sys.executable, "-m", "arq"]


class Proc:
    """A subprocess whose output goes to a log file."""

    def __init__(self, cmd: Sequence[str], log: Path, env: Mapping[str, str]) -> None:
        self.log = log
        full_env = {
            **os.environ,
            **env,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
            ),
        }
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(
                list(cmd), cwd=REPO_ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 60.0) -> list[str]:
        """Wait until ``pattern`` (a regex) matches ``count`` times in the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.findall(pattern, self.text())
            if len(found) >= count:
                return found
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"{pattern!r} x{count} not in the log (exit code {self.popen.poll()}):\n"
            + self.text()[-4000:]
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise


@contextmanager
def running(
    cmd: Sequence[str],
    log: Path,
    env: Mapping[str, str],
    ready: str = "Starting worker",
    count: int = 1,
) -> Iterator[Proc]:
    """Run ``cmd`` until the block ends; wait for ``ready`` to appear ``count`` times first."""
    proc = Proc(cmd, log, env)
    try:
        proc.wait_for(ready, count)
        yield proc
    finally:
        proc.stop()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def run_burst(backend: Any, *, timeout: float | None = None, **overrides: Any) -> Any:
    """Run an in-process ARQ worker of ``backend`` until its queue is empty; return it.

    ``timeout`` bounds the run (a job that loops must fail the test, not hang it);
    ``overrides`` go to ``backend.worker_settings``.
    """
    import asyncio

    from arq.worker import create_worker

    worker = create_worker(backend.worker_settings(**overrides), burst=True, handle_signals=False)
    try:
        run = worker.async_run()
        await (asyncio.wait_for(run, timeout) if timeout is not None else run)
    finally:
        await worker.close()
    return worker
