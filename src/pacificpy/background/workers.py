"""The worker registry, and what a worker knows of its own health (SPEC §10.6).

Every worker process (a Celery worker, each ARQ worker process) and every app running
in-process workers (the local executor) writes a **heartbeat** every
``backend.heartbeat_interval`` seconds (10 by default; ``configure_background_tasks(...,
heartbeat_interval=...)``): its id, host, pid, backend, queues, the tasks it runs now, when
it started and when it was last seen. The records are kept by the backend's
:class:`~pacificpy.background.backends.state.TaskState` (in memory for the local executor,
in Redis with a TTL for Celery and ARQ). A worker that stops cleanly removes its record;
one not seen for :data:`LOST_AFTER` heartbeats is **lost**, and the tasks it was running
are named (they run again elsewhere once the transport gives them back, or are
dead-lettered as poison).

:class:`Link` is a worker's view of its backend: reachable, or unreachable since when and
why; past a grace period the worker turns not ready and logs why, and turns ready again
(logged) once the backend answers. :class:`WorkerHealth` gathers the checks that
``pacificpy worker --health-port`` answers.

Nothing here knows of HTTP; the readers are ``/metrics``, the dashboard and
``pacificpy tasks workers``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pacificpy.errors import ConfigurationError

if TYPE_CHECKING:
    from pacificpy.background.backend import BackgroundBackend
    from pacificpy.background.backends.state import TaskState

__all__ = [
    "DEFAULT_GRACE",
    "HEARTBEAT_INTERVAL",
    "KEEP_LOST",
    "LOST_AFTER",
    "Heartbeat",
    "Link",
    "WorkerHealth",
    "WorkerInfo",
    "check_interval",
    "in_flight",
    "list_workers",
    "workers_view",
]

logger = logging.getLogger("pacificpy.worker")

#: Default seconds between two heartbeats of a worker.
HEARTBEAT_INTERVAL = 10.0
#: A worker not seen for this many of its heartbeat intervals is lost.
LOST_AFTER = 3
#: Seconds a lost worker stays listed before its record expires.
KEEP_LOST = 3600.0
#: Default seconds a worker may fail to reach its backend before it turns not ready.
DEFAULT_GRACE = 10.0

#: ``(ok, detail)`` of one health check.
Check = Callable[[], tuple[bool, str]]


def check_interval(value: object, what: str = "heartbeat_interval") -> float:
    """``value`` as a positive number of seconds.

    Raises:
        ConfigurationError: it is not one.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigurationError(f"{what} must be a positive number of seconds, not {value!r}")
    if value == float("inf"):
        raise ConfigurationError(f"{what} must be finite")
    return float(value)


@dataclasses.dataclass
class WorkerInfo:
    """One worker's last heartbeat, as the registry keeps it.

    Attributes:
        running: the tasks it ran at its last heartbeat: ``{"id", "name", "queue"}`` each.
        interval: its heartbeat interval (seconds), so any reader can tell it is lost.
    """

    id: str
    host: str
    pid: int
    backend: str
    queues: list[str]
    running: list[dict[str, str]]
    started_at: float
    last_seen: float
    interval: float

    def lost(self, now: float | None = None) -> bool:
        """True once it has not been seen for :data:`LOST_AFTER` heartbeats."""
        now = time.time() if now is None else now
        return now - self.last_seen > LOST_AFTER * self.interval

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        """JSON-friendly form, with ``state`` (``live`` / ``lost``) as of ``now``."""
        d = dataclasses.asdict(self)
        d["state"] = "lost" if self.lost(now) else "live"
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerInfo | None:
        """The record ``data`` read back; None if it is not one (another writer's)."""
        try:
            running = [
                {"id": str(r["id"]), "name": str(r.get("name", "")), "queue": str(r.get("queue"))}
                for r in data.get("running", [])
            ]
            return cls(
                id=str(data["id"]),
                host=str(data.get("host", "")),
                pid=int(data.get("pid", 0)),
                backend=str(data.get("backend", "")),
                queues=[str(q) for q in data.get("queues", [])],
                running=running,
                started_at=float(data.get("started_at", 0.0)),
                last_seen=float(data["last_seen"]),
                interval=float(data["interval"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def list_workers(state: TaskState) -> list[WorkerInfo]:
    """The workers ``state`` knows: live ones first, then lost ones, oldest start first."""
    found = [WorkerInfo.from_dict(r) for r in state.list_worker_records()]
    now = time.time()
    workers = [w for w in found if w is not None]
    return sorted(workers, key=lambda w: (w.lost(now), w.started_at, w.id))


def workers_view(backend: BackgroundBackend) -> dict[str, Any]:
    """The registry of ``backend`` as the dashboard shows it: ``{"workers": [...], "kept"}``
    (``kept`` False: the backend's state keeps no registry)."""
    now = time.time()
    state = backend.state
    return {
        "workers": [w.to_dict(now) for w in list_workers(state)],
        "kept": state.keeps_workers,
        "now": now,
    }


def in_flight(workers: list[WorkerInfo], now: float | None = None) -> dict[str, int]:
    """Tasks running per queue on the live ``workers``, as of their last heartbeats."""
    counts: dict[str, int] = {}
    for w in workers:
        if w.lost(now):
            continue
        for task in w.running:
            counts[task["queue"]] = counts.get(task["queue"], 0) + 1
    return counts


def _new_id(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}:{os.urandom(3).hex()}"


class Link:
    """Whether a worker reaches its backend, with a grace period before it counts.

    Whatever talks to the backend reports :meth:`ok` or :meth:`failed`; :meth:`status` says
    ready unless the backend has been unreachable for longer than ``grace`` seconds. The
    turn to not ready is logged once as a WARNING with the reason, and the way back as an
    INFO.
    """

    def __init__(self, what: str, grace: float = DEFAULT_GRACE) -> None:
        self.what = what
        self.grace = check_interval(grace, "grace")
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._error = ""
        self._reported = False

    def ok(self) -> None:
        """The backend answered."""
        if self._down_since is None:
            return
        with self._lock:
            since, self._down_since = self._down_since, None
            reported, self._reported = self._reported, False
        if reported and since is not None:
            logger.info(
                "%s reaches its backend again after %.1fs; ready", self.what,
                time.monotonic() - since,
            )  # fmt: skip

    def failed(self, exc: BaseException) -> None:
        """The backend did not answer (``exc`` says why)."""
        with self._lock:
            if self._down_since is None:
                self._down_since = time.monotonic()
            self._error = f"{type(exc).__name__}: {exc}"[:300]
        self.status()

    def status(self) -> tuple[bool, str]:
        """``(ready, detail)`` now."""
        with self._lock:
            since, error = self._down_since, self._error
            if since is None:
                return True, "backend reachable"
            down = time.monotonic() - since
            if down < self.grace:
                return True, f"backend unreachable for {down:.1f}s (grace {self.grace:g}s): {error}"
            report, self._reported = not self._reported, True
        if report:
            logger.warning(
                "%s cannot reach its backend for %.1fs, longer than its grace period of %gs "
                "(%s): not ready until the backend answers; reconnecting by itself",
                self.what, down, self.grace, error,
            )  # fmt: skip
        return False, f"backend unreachable for {down:.1f}s: {error}"


class WorkerHealth:
    """The checks a worker command's health endpoint answers: ready when every one is.

    A backend's worker code adds its checks (``consuming``, ``backend``, one per supervised
    process ...); with none added yet the worker is starting, not ready.
    """

    def __init__(self, grace: float = DEFAULT_GRACE) -> None:
        #: Seconds the worker may fail to reach its backend before it is not ready.
        self.grace = check_interval(grace, "grace")
        self._lock = threading.Lock()
        self._checks: dict[str, Check] = {}

    def add(self, name: str, check: Check) -> None:
        with self._lock:
            self._checks[name] = check

    def remove(self, name: str) -> None:
        with self._lock:
            self._checks.pop(name, None)

    def report(self) -> tuple[bool, dict[str, dict[str, Any]]]:
        """``(ready, {check: {"ok", "detail"}})``; a check that raises is not ok."""
        with self._lock:
            checks = dict(self._checks)
        if not checks:
            return False, {"worker": {"ok": False, "detail": "starting"}}
        out: dict[str, dict[str, Any]] = {}
        for name, check in checks.items():
            try:
                ok, detail = check()
            except Exception as exc:
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            out[name] = {"ok": bool(ok), "detail": detail}
        return all(v["ok"] for v in out.values()), out


class Heartbeat:
    """Writes one worker's record to the registry every ``interval`` seconds.

    Args:
        state: where the record goes.
        backend: the backend's kind (``local``, ``celery``, ``arq``).
        queues: the queues it consumes.
        running: returns the tasks it runs now (``{"id", "name", "queue"}`` each); called
            once per heartbeat, never per task.
        interval: seconds between heartbeats.
        link: told whether each write reached the backend.
        probe_every: with a ``link``, also call ``ping`` this often between heartbeats,
            so an unreachable backend is noticed within it.
        ping: one round trip to the backend (default: the state's ``ping``).
    """

    def __init__(
        self,
        state: TaskState,
        *,
        backend: str,
        queues: list[str],
        running: Callable[[], list[dict[str, str]]],
        interval: float = HEARTBEAT_INTERVAL,
        link: Link | None = None,
        probe_every: float | None = None,
        ping: Callable[[], object] | None = None,
    ) -> None:
        self.state = state
        self.backend = backend
        self.queues = list(queues)
        self.running = running
        self.interval = check_interval(interval)
        self.link = link
        self.probe_every = probe_every
        self.ping = ping if ping is not None else state.ping
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.id = _new_id(self.pid)
        self.started_at = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def ttl(self) -> float:
        """How long a record outlives its last write: lost after, then listed a while."""
        return LOST_AFTER * self.interval + KEEP_LOST

    def record(self) -> dict[str, Any]:
        """This worker's record, as of now."""
        try:
            running = list(self.running())
        except Exception:
            logger.exception("could not list the running tasks of worker %s", self.id)
            running = []
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "backend": self.backend,
            "queues": self.queues,
            "running": running,
            "started_at": self.started_at,
            "last_seen": time.time(),
            "interval": self.interval,
        }

    def _report(self, exc: BaseException | None) -> None:
        if self.link is None:
            if exc is not None:
                logger.warning("worker %s could not write its heartbeat: %s", self.id, exc)
            return
        if exc is None:
            self.link.ok()
        else:
            self.link.failed(exc)

    def beat(self) -> bool:
        """Write the record now; False (reported to the link) if the state did not take it."""
        try:
            self.state.put_worker(self.id, self.record(), self.ttl)
        except Exception as exc:
            self._report(exc)
            return False
        self._report(None)
        return True

    async def abeat(self) -> bool:
        """:meth:`beat` for an event loop."""
        try:
            await self.state.aput_worker(self.id, self.record(), self.ttl)
        except Exception as exc:
            self._report(exc)
            return False
        self._report(None)
        return True

    def _probe(self) -> None:
        try:
            self.ping()
        except Exception as exc:
            self._report(exc)
        else:
            self._report(None)

    def _ticks(self) -> tuple[float, bool]:
        """Seconds between wake-ups, and whether they PING between heartbeats."""
        if self.link is not None and self.probe_every and self.probe_every < self.interval:
            return self.probe_every, True
        return self.interval, False

    # -- on a thread of its own (local executor, Celery worker) ---------------------------
    def start(self) -> None:
        """Write the first heartbeat now and the next ones on a daemon thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self.beat()
        self._thread = threading.Thread(target=self._run, name="pacificpy-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        tick, probing = self._ticks()
        next_beat = time.monotonic() + self.interval
        while not self._stop.wait(min(tick, max(0.0, next_beat - time.monotonic()))):
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.interval
                self.beat()
            elif probing:
                self._probe()

    def stop(self, *, deregister: bool = True) -> None:
        """Stop the thread; with ``deregister``, remove the record (a clean stop is never
        shown as lost)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        if deregister:
            try:
                self.state.remove_worker(self.id)
            except Exception as exc:
                logger.warning("worker %s could not remove its registration: %s", self.id, exc)

    # -- on an event loop (ARQ worker) -----------------------------------------------------
    async def run(self) -> None:
        """Write heartbeats until cancelled (the first at once)."""
        tick, probing = self._ticks()
        await self.abeat()
        next_beat = time.monotonic() + self.interval
        while True:
            await asyncio.sleep(min(tick, max(0.0, next_beat - time.monotonic())))
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.interval
                await self.abeat()
            elif probing:
                await asyncio.to_thread(self._probe)

    async def aderegister(self) -> None:
        """Remove the record (a clean stop)."""
        try:
            await self.state.aremove_worker(self.id)
        except Exception as exc:
            logger.warning("worker %s could not remove its registration: %s", self.id, exc)
