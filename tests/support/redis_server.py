"""A private ``redis-server`` for tests: free port, temp dir, stop and restart at will."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from tests.support.net import free_port

__all__ = ["RedisServer", "RedisServerError", "redis_server_binary", "require_redis_server"]

_START_ATTEMPTS = 3


class RedisServerError(RuntimeError):
    """Raised when the redis-server cannot be found or does not come up."""


def redis_server_binary() -> str | None:
    """Return the path of ``redis-server`` on ``PATH``, or ``None``."""
    return shutil.which("redis-server")


def _ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A ``redis-server`` process of its own, without persistence, on 127.0.0.1.

    ``start()`` picks a free port (once; ``restart()`` reuses it) and waits until the server
    answers ``PING``. ``stop()`` ends it (SIGTERM, then SIGKILL); ``close()`` also removes
    its temp dir. Usable as a context manager: ``with RedisServer() as redis: redis.url``.

    Args:
        startup_timeout: seconds to wait for ``PING`` after starting.
        persistent: keep an append-only file (fsync always), so a stop and restart keeps
            what was written, as production Redis behind a task queue does.
    """

    def __init__(self, startup_timeout: float = 20.0, *, persistent: bool = False) -> None:
        self.startup_timeout = startup_timeout
        self.persistent = persistent
        self._port: int | None = None
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        """The server's port, fixed at the first ``start()``."""
        if self._port is None:
            raise RedisServerError("the redis-server has not been started yet")
        return self._port

    @property
    def url(self) -> str:
        """The ``redis://127.0.0.1:PORT/0`` URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        """The server's log file (useful in failure messages)."""
        if self._dir is None:
            raise RedisServerError("the redis-server has not been started yet")
        return self._dir / "redis.log"

    def fresh_db_url(self, db: int) -> str:
        """The URL of database ``db``, emptied, with the server started again if it was stopped."""
        if not self.is_running():
            self.start()
        url = f"redis://127.0.0.1:{self.port}/{db}"
        redis.Redis.from_url(url).flushdb()
        return url

    def is_running(self) -> bool:
        """Return whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def ping(self) -> bool:
        """Return whether the server answers ``PING`` right now."""
        return self._port is not None and _ping(self._port)

    def start(self) -> RedisServer:
        """Start the server and wait until it answers ``PING``; a no-op when running.

        Raises:
            RedisServerError: if ``redis-server`` is not on ``PATH`` or does not answer
                within ``startup_timeout``.
        """
        if self.is_running():
            return self
        binary = redis_server_binary()
        if binary is None:
            raise RedisServerError(
                "redis-server is not on PATH; install it (apt-get install redis-server)"
            )
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="pacificpy-redis-"))
        if self._port is not None:
            # restart(): the port must stay the same, so no retry with another one.
            self._spawn(binary, self._port)
            return self
        last_error: RedisServerError | None = None
        for _ in range(_START_ATTEMPTS):
            port = free_port()
            try:
                self._spawn(binary, port)
            except RedisServerError as exc:
                # Most likely another process took the port between probe and bind.
                last_error = exc
                continue
            self._port = port
            return self
        assert last_error is not None
        raise last_error

    def _spawn(self, binary: str, port: int) -> None:
        assert self._dir is not None
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(
                [
                    binary,
                    "--save",
                    "",
                    *(
                        ("--appendonly", "yes", "--appendfsync", "always")
                        if self.persistent
                        else ("--appendonly", "no")
                    ),
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self._dir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self._dir,
            )
        deadline = time.monotonic() + self.startup_timeout
        while not _ping(port):
            if proc.poll() is not None:
                raise RedisServerError(
                    f"redis-server exited with {proc.returncode} on port {port}:\n"
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            if time.monotonic() > deadline:
                _terminate(proc)
                raise RedisServerError(
                    f"redis-server did not answer PING on port {port} within "
                    f"{self.startup_timeout} s:\n"
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            time.sleep(0.02)
        self._proc = proc

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` s) and reap it.

        The port and the temp dir are kept for ``restart()``.
        """
        proc, self._proc = self._proc, None
        if proc is not None:
            _terminate(proc, timeout)

    def restart(self) -> RedisServer:
        """Stop the server if it runs and start it again on the same port."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and remove its temp dir."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<RedisServer port={self._port} {state}>"


def _terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def require_redis_server() -> str:
    """Return the ``redis-server`` path, or skip the test (fail instead when ``CI`` is set)."""
    import pytest

    binary = redis_server_binary()
    if binary is None:
        message = "redis-server is not on PATH (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary
