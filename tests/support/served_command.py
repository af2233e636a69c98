"""Serve an app with a real command (``app.run()``, ``pacificpy run``), use it, stop it.

Unlike :func:`tests.support.uvicorn_server.serve_app`, the command is the caller's: the test
is about that command starting a server, answering, and ending cleanly on a signal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.support.net import free_port, port_is_open
from tests.support.uvicorn_server import REPO_ROOT
from tests.support.wait import wait_for

__all__ = ["ServedRun", "assert_clean_stop", "enqueue_and_read", "http_json", "run_served"]

_START_ATTEMPTS = 3


class ServedRun:
    """What :func:`run_served` saw: the exit code and the command's output."""

    def __init__(self, returncode: int, output: str) -> None:
        self.returncode = returncode
        self.output = output


def assert_clean_stop(run: ServedRun, stop_with: signal.Signals) -> None:
    """The server shut down gracefully on ``stop_with``: lifespan ended, exit status clean.

    uvicorn (0.29 and later) re-raises the signal it caught once its graceful shutdown is
    done, so a SIGTERM'd server ends "killed by SIGTERM" (-15) as process managers expect;
    SIGINT ends with status 0. Anything else (a traceback, exit 1, SIGKILL) is a failure.
    """
    assert run.returncode in (0, -stop_with), (run.returncode, run.output)
    assert "Uvicorn running on http://127.0.0.1:" in run.output, run.output
    assert "Application shutdown complete." in run.output, run.output
    assert "Traceback" not in run.output, run.output


def assert_served_app_ran(run: ServedRun, stop_with: signal.Signals, out_dir: Path) -> None:
    """``tests.apps.served_app`` stopped cleanly after running its task and shutdown hook."""
    assert_clean_stop(run, stop_with)
    assert (out_dir / "ran-21").read_text() == "42"  # the task ran, in the served process
    assert (out_dir / "shutdown").exists()  # and the app's shutdown hook ran


def http_json(url: str, body: Any = None) -> Any:
    """GET ``url`` (POST ``body`` as JSON when given) and return the decoded answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method="GET" if body is None else "POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


def enqueue_and_read(base_url: str) -> str:
    """Against ``tests.apps.served_app``: enqueue ``double(21)``, poll it to completed.

    Returns the task's id.
    """
    task_id: str = http_json(base_url + "/tasks", {"n": 21})["id"]

    def completed() -> Any:
        answer = http_json(f"{base_url}/tasks/{task_id}")
        return answer if answer["status"] == "completed" else None

    answer = wait_for(completed, 30, what=f"task {task_id} to complete")
    assert answer["result"] == "42", answer
    return task_id


def run_served(
    command: Callable[[int], Sequence[str]],
    use: Callable[[str], None],
    *,
    env: dict[str, str],
    stop_with: signal.Signals = signal.SIGTERM,
    startup_timeout: float = 60.0,
    shutdown_timeout: float = 30.0,
) -> ServedRun:
    """Start ``command(port)`` in the repository root, call ``use(base_url)``, then signal it.

    The port is polled with a deadline; the process is joined with ``shutdown_timeout``
    (killed, and the test failed, if it does not end).
    """
    full_env = {**os.environ, **env}
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    with tempfile.TemporaryFile() as log:
        for attempt in range(_START_ATTEMPTS):
            port = free_port()
            log.seek(0)
            log.truncate()
            proc = subprocess.Popen(
                list(command(port)), cwd=REPO_ROOT, env=full_env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                wait_for(
                    lambda: proc.poll() is not None or port_is_open(port),  # noqa: B023
                    startup_timeout,
                    what=f"the server to listen on port {port}",
                )
            except AssertionError:
                proc.kill()
                proc.wait()
                raise
            if proc.poll() is None:
                break
            output = _read(log)
            if "address already in use" in output.lower() and attempt + 1 < _START_ATTEMPTS:
                continue
            raise AssertionError(f"the server exited with {proc.returncode}:\n{output[-4000:]}")
        try:
            use(f"http://127.0.0.1:{port}")
        finally:
            proc.send_signal(stop_with)
            try:
                proc.wait(timeout=shutdown_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError(
                    f"the server ignored {stop_with.name} for {shutdown_timeout}s:\n{_read(log)}"
                ) from None
        return ServedRun(proc.returncode, _read(log))


def _read(log: Any) -> str:
    log.seek(0)
    text: str = log.read().decode(errors="replace")
    return text
