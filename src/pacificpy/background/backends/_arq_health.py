"""An ARQ worker process in the worker registry, its link to Redis, and its health.

Each ARQ worker process (stock ``arq`` or ``pacificpy worker``) writes its heartbeat from
its ``on_startup`` on (:class:`ArqWorkerHealth`). Under ``pacificpy worker`` it also:

- runs :class:`ResilientWorker`, ARQ's worker whose poll survives a Redis outage: a poll
  that cannot reach Redis is reported to the process's
  :class:`~pacificpy.background.workers.Link` and tried again a moment later (stock ARQ
  ends the process);
- reports ``{"ok", "detail"}`` lines to its supervisor on a pipe (``--status-fd``) each
  time its readiness changes; the supervisor's ``--health-port`` answers from them
  (:class:`SlotStatus`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

import orjson
from arq.worker import Worker
from redis.exceptions import RedisError

from pacificpy.background.workers import DEFAULT_GRACE, Heartbeat, Link

if TYPE_CHECKING:
    from pacificpy.background.backends._arq_worker import WorkerState

__all__ = ["ArqWorkerHealth", "ResilientWorker", "SlotStatus"]

logger = logging.getLogger("pacificpy.worker")

#: Seconds between two looks at the process's readiness (a change is sent at once).
REPORT_EVERY = 0.25
#: Seconds a poll waits after Redis did not answer, before it tries again.
RETRY_POLL = 0.5


class ArqWorkerHealth:
    """The registry heartbeat and the health of one ARQ worker process."""

    def __init__(self, worker: WorkerState) -> None:
        self.worker = worker
        #: Seconds without Redis before the process is not ready (``--health-grace``).
        self.grace = DEFAULT_GRACE
        #: The pipe to the supervisor, if there is one.
        self.status_fd: int | None = None
        self.link: Link | None = None
        self.beat: Heartbeat | None = None
        self.consuming = False
        self._tasks: list[asyncio.Task[None]] = []
        self._sent: bool | None = None

    def _running(self) -> list[dict[str, str]]:
        queue = self.worker.queue
        return [{"id": j, "name": n, "queue": queue} for j, n in list(self.worker.running.items())]

    def start(self) -> None:
        """Register the process and start reporting (on the worker's loop)."""
        if self.beat is not None:
            return
        backend = self.worker.backend
        self.link = Link(f"ARQ worker pid {os.getpid()}", self.grace)
        self.beat = Heartbeat(
            backend.state,
            backend=backend.kind,
            queues=[self.worker.queue],
            running=self._running,
            interval=backend.heartbeat_interval,
            link=self.link,
        )
        self.consuming = True
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self.beat.run()), loop.create_task(self._watch())]

    async def stop(self) -> None:
        """Leave the registry (a clean stop) and tell the supervisor."""
        self.consuming = False
        self.report()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        beat, self.beat = self.beat, None
        if beat is not None:
            await beat.aderegister()

    def polled(self, exc: BaseException | None = None) -> None:
        """A poll of the queue reached Redis (``exc`` None) or did not."""
        if self.link is None:
            return
        if exc is None:
            self.link.ok()
        else:
            self.link.failed(exc)

    def status(self) -> tuple[bool, str]:
        """``(ready, detail)``: consuming and reaching Redis (within the grace period)."""
        if not self.consuming or self.link is None:
            return False, "not consuming"
        return self.link.status()

    def report(self) -> None:
        """Send the readiness to the supervisor if it changed."""
        fd = self.status_fd
        if fd is None:
            return
        ok, detail = self.status()
        if ok == self._sent:
            return
        try:
            os.set_blocking(fd, False)  # a supervisor that stopped reading never blocks us
            os.write(fd, orjson.dumps({"ok": ok, "detail": detail}) + b"\n")
        except BlockingIOError:
            return  # its pipe is full: tell it next time
        except OSError as exc:
            logger.warning("could not report this worker's health to its supervisor: %s", exc)
            self.status_fd = None
            return
        self._sent = ok

    async def _watch(self) -> None:
        while True:
            self.report()
            await asyncio.sleep(REPORT_EVERY)


class ResilientWorker(Worker):  # type: ignore[misc]
    """ARQ's worker, kept alive through a Redis outage (``pacificpy worker`` runs it).

    ``health`` is told whether each poll reached Redis.
    """

    health: ArqWorkerHealth | None = None

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            if self.health is not None:
                self.health.polled(exc)
            else:
                logger.warning("poll failed, trying again: %s", exc)
            await asyncio.sleep(RETRY_POLL)
            return
        if self.health is not None:
            self.health.polled()


class SlotStatus:
    """What the supervisor knows of one worker process's health, read from its pipe."""

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
