"""Serve an app with a real ``uvicorn`` subprocess for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from tests.support.net import free_port, port_is_open

__all__ = ["REPO_ROOT", "UvicornStartError", "serve_app"]

REPO_ROOT = Path(__file__).resolve().parents[2]

_START_ATTEMPTS = 3


class UvicornStartError(RuntimeError):
    """Raised when the uvicorn subprocess exits or does not listen in time."""


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def serve_app(
    import_string: str,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    *,
    startup_timeout: float = 60.0,
    shutdown_timeout: float = 20.0,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run ``python -m uvicorn IMPORT_STRING`` on a free port; yield ``(base_url, process)``.

    The process runs in the repository root with the root on ``PYTHONPATH`` (so
    ``tests.apps.web_app:app`` imports), plus ``env`` on top of the current environment.
    uvicorn binds its port only after the app's startup, so once the port answers the app
    is ready. On exit the server gets SIGINT (a graceful shutdown) and is killed if it has
    not ended within ``shutdown_timeout``. Its output is in the error raised when it fails
    to start.

    Raises:
        UvicornStartError: if the server exits or does not listen within ``startup_timeout``.
    """
    full_env = dict(os.environ)
    pythonpath = [str(REPO_ROOT)]
    if full_env.get("PYTHONPATH"):
        pythonpath.append(full_env["PYTHONPATH"])
    full_env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    if env:
        full_env.update(env)

    with tempfile.TemporaryFile() as log:
        proc: subprocess.Popen[bytes] | None = None
        port = 0
        for attempt in range(_START_ATTEMPTS):
            port = free_port()
            log.seek(0)
            log.truncate()
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    import_string,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    *extra_args,
                ],
                cwd=REPO_ROOT,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            deadline = time.monotonic() + startup_timeout
            while proc.poll() is None and not port_is_open(port):
                if time.monotonic() > deadline:
                    _stop(proc, shutdown_timeout)
                    break
                time.sleep(0.05)
            if proc.poll() is None:
                break
            log.seek(0)
            output = log.read().decode(errors="replace")
            # Another process may have taken the port between probe and bind: try again.
            if "address already in use" in output.lower() and attempt + 1 < _START_ATTEMPTS:
                continue
            raise UvicornStartError(
                f"uvicorn {import_string} did not start on port {port} "
                f"(exit code {proc.returncode}):\n{output[-4000:]}"
            )
        assert proc is not None
        try:
            yield f"http://127.0.0.1:{port}", proc
        finally:
            _stop(proc, shutdown_timeout)
