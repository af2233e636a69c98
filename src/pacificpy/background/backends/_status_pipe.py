"""How a supervised worker process tells its supervisor whether it is ready.

The supervisor (:mod:`._arq_supervisor`, which runs the ARQ and the SQLite worker
processes) gives each process the write end of a pipe (``--status-fd``); the process
writes one JSON line, ``{"ok": bool, "detail": str}``, each time its readiness changes
(:class:`StatusWriter`); the supervisor reads them (:class:`SlotStatus`) and its
``--health-port`` answers from the last one. Nothing here imports a backend's extra.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Any

import orjson

__all__ = ["SlotStatus", "StatusWriter"]

logger = logging.getLogger("pacificpy.worker")


class StatusWriter:
    """The worker process's end: sends its readiness when it changes, never blocking."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        self._sent: bool | None = None
        if fd is not None:
            os.set_blocking(fd, False)  # a supervisor that stopped reading never blocks us

    def send(self, ok: bool, detail: str) -> None:
        """Tell the supervisor ``(ok, detail)`` if ``ok`` changed since the last time."""
        if self.fd is None or ok == self._sent:
            return
        try:
            os.write(self.fd, orjson.dumps({"ok": ok, "detail": detail}) + b"\n")
        except BlockingIOError:
            return  # its pipe is full: tell it next time
        except OSError as exc:
            logger.warning("could not report this worker's health to its supervisor: %s", exc)
            self.fd = None
            return
        self._sent = ok


class SlotStatus:
    """The supervisor's end, for one worker slot: what its process last reported."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._buf = b""
        self._state: tuple[bool, str] = (False, "starting")

    def open(self) -> int:
        """A new pipe for a new process; returns the end the process writes."""
        self.close("starting")
        read, write = os.pipe()
        os.set_blocking(read, False)
        with self._lock:
            self._fd = read
        return write

    def close(self, detail: str) -> None:
        """The process is gone: not ready, for ``detail``."""
        with self._lock:
            fd, self._fd = self._fd, None
            self._buf = b""
            self._state = (False, detail)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def poll(self) -> None:
        """Read what the process sent since."""
        with self._lock:
            fd = self._fd
            if fd is None:
                return
            while True:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # nothing more now (EAGAIN), or the pipe is gone
                    break
                if not chunk:
                    break
                self._buf += chunk
            *lines, self._buf = self._buf.split(b"\n")
            for line in lines:
                try:
                    d: Any = orjson.loads(line)
                    self._state = (bool(d["ok"]), str(d.get("detail", "")))
                except Exception:
                    continue

    def status(self) -> tuple[bool, str]:
        self.poll()
        with self._lock:
            return self._state
