"""An ARQ worker process in the worker registry, its link to Redis, and its health.

Each ARQ worker process (stock ``arq`` or ``pacificpy worker``) writes its heartbeat from
its ``on_startup`` on (:class:`ArqWorkerHealth`). Under ``pacificpy worker`` it also:

- runs :class:`ResilientWorker`, ARQ's worker whose poll survives a Redis outage: a poll
  that cannot reach Redis is reported to the process's
  :class:`~pacificpy.background.workers.Link` and tried again a moment later (stock ARQ
  ends the process);
- reports its readiness to its supervisor on a pipe (``--status-fd``,
  :mod:`._status_pipe`); the supervisor's ``--health-port`` answers from it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from arq.worker import Worker
from redis.exceptions import RedisError

from pacificpy.background.backends._status_pipe import StatusWriter
from pacificpy.background.workers import DEFAULT_GRACE, Heartbeat, Link

if TYPE_CHECKING:
    from pacificpy.background.backends._arq_worker import WorkerState

__all__ = ["ArqWorkerHealth", "ResilientWorker"]

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
        #: The pipe to the supervisor (``StatusWriter(None)``: there is none).
        self.pipe = StatusWriter(None)
        self.link: Link | None = None
        self.beat: Heartbeat | None = None
        self.consuming = False
        self._tasks: list[asyncio.Task[None]] = []

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
        self.pipe.send(*self.status())

    async def _watch(self) -> None:
        while True:
            self.report()
            await asyncio.sleep(REPORT_EVERY)


class ResilientWorker(Worker):
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
