"""``pacificpy worker myapp --workers N`` for ARQ: N worker processes, supervised.

The supervisor starts each worker as ``python -m pacificpy.background.backends._arq_supervisor
MODULE`` in its own session (so a terminal's Ctrl-C reaches only the supervisor, which then
stops each worker exactly once), restarts a worker that exits while it should be running
(logging why, backing off if it keeps dying at once), and on SIGINT/SIGTERM sends SIGTERM
to every worker: each stops taking jobs, gives running ones its grace period and hands the
rest back. Workers still alive ``grace + 10`` seconds later are killed.

A worker process also stops by itself if its supervisor disappears.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType
from typing import Any

from pacificpy.background.backends._status_pipe import SlotStatus
from pacificpy.background.workers import DEFAULT_GRACE, WorkerHealth

__all__ = ["child_main", "supervise"]

logger = logging.getLogger("pacificpy.worker")

_QUICK_DEATH = 5.0  # a worker dying sooner than this after its start counts as a crash loop
_MAX_BACKOFF = 10.0


@dataclasses.dataclass
class _Slot:
    index: int
    queue: str | None
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    quick_deaths: int = 0
    restart_at: float = 0.0
    #: What the process last reported of its health (on its ``--status-fd`` pipe).
    health: SlotStatus = dataclasses.field(default_factory=SlotStatus)


def _spawn(slot: _Slot, module: str, log_level: str, child: str, label: str, grace: float) -> None:
    cmd = [sys.executable, "-m", child, module, "--parent", str(os.getpid())]
    cmd += ["--log-level", log_level]
    if slot.queue:
        cmd += ["--queue", slot.queue]
    status = slot.health.open()
    cmd += ["--status-fd", str(status), "--health-grace", repr(grace)]
    try:
        slot.proc = subprocess.Popen(cmd, start_new_session=True, pass_fds=(status,))
    finally:
        os.close(status)
    slot.started = time.monotonic()
    logger.info(
        "started %s worker %d (pid %d) for queue %s",
        label, slot.index, slot.proc.pid, slot.queue or "default",
    )  # fmt: skip


def supervise(
    module: str,
    *,
    workers: int,
    queues: list[str | None],
    grace: float,
    log_level: str = "info",
    health: WorkerHealth | None = None,
    child: str = __name__,
    label: str = "ARQ",
) -> int:
    """Run ``workers`` processes per queue until SIGINT/SIGTERM; return the exit code.

    Each process runs ``python -m child MODULE --parent PID [--queue Q] --status-fd FD
    --health-grace S`` (the SQLite backend passes its own ``child`` module, and its queues
    joined by commas as one Q). ``health`` gets one check per process: ready once it
    consumes and reaches its backend, as it reports on its status pipe.
    """
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    slots = [
        _Slot(index=i, queue=q) for i, q in enumerate(q for q in queues for _ in range(workers))
    ]
    health_grace = health.grace if health is not None else DEFAULT_GRACE
    if health is not None:
        for slot in slots:
            health.add(f"worker {slot.index} ({slot.queue or 'default'})", slot.health.status)
    try:
        for slot in slots:
            _spawn(slot, module, log_level, child, label, health_grace)
        while not stop.wait(0.2):
            now = time.monotonic()
            for slot in slots:
                slot.health.poll()  # read what it reported, so its pipe never fills up
                proc = slot.proc
                if proc is None:
                    if now >= slot.restart_at:
                        _spawn(slot, module, log_level, child, label, health_grace)
                    continue
                code = proc.poll()
                if code is None:
                    continue
                lived = now - slot.started
                slot.quick_deaths = slot.quick_deaths + 1 if lived < _QUICK_DEATH else 0
                backoff = min(_MAX_BACKOFF, 0.5 * 2 ** (slot.quick_deaths - 1))
                backoff = backoff if slot.quick_deaths else 0.0
                logger.warning(
                    "%s worker %d (pid %d) exited with code %s after %.1fs; restarting it%s",
                    label, slot.index, proc.pid, code, lived,
                    f" in {backoff:.1f}s" if backoff else "",
                )  # fmt: skip
                slot.proc = None
                slot.restart_at = now + backoff
                slot.health.close(f"exited with code {code}; restarting")
        name = signal.Signals(received[0]).name if received else "signal"
        logger.info(
            "%s received: stopping %d %s workers (grace period %.1fs)",
            name, len(slots), label, grace,
        )  # fmt: skip
        return _stop_all(slots, grace, label)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop_all(slots: list[_Slot], grace: float, label: str = "ARQ") -> int:
    procs = [s.proc for s in slots if s.proc is not None and s.proc.poll() is None]
    for proc in procs:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace + 10.0
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.error("%s worker pid %d did not stop in time; killing it", label, proc.pid)
            proc.kill()
            proc.wait()
    logger.info("all %s workers stopped", label)
    return 0


# -- the worker process ---------------------------------------------------------------------
def _watch_parent(parent: int) -> None:
    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                logger.warning("supervisor %d is gone; stopping this worker", parent)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="pacificpy-parent-watch", daemon=True).start()


def child_main(argv: list[str] | None = None) -> None:
    """Entry point of one supervised worker process."""
    parser = argparse.ArgumentParser(prog="pacificpy-arq-worker")
    parser.add_argument("module")
    parser.add_argument("--queue", default=None)
    parser.add_argument("--parent", type=int, default=None)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--status-fd", type=int, default=None)
    parser.add_argument("--health-grace", type=float, default=DEFAULT_GRACE)
    args = parser.parse_args(argv)

    import logging.config

    from arq.logs import default_log_config
    from arq.worker import get_kwargs

    from pacificpy.background.backends._arq_health import ResilientWorker
    from pacificpy.background.backends._status_pipe import StatusWriter
    from pacificpy.background.backends.arq_backend import (
        ARQBackgroundBackend,
        arq_queue_name,
    )
    from pacificpy.background.decorators import get_backend

    config = default_log_config(args.log_level == "debug")
    config["loggers"]["pacificpy"] = {
        "handlers": ["arq.standard"],
        "level": args.log_level.upper(),
    }
    logging.config.dictConfig(config)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(args.module)
    settings = getattr(module, "WorkerSettings", None)
    if settings is None:
        backend = get_backend()
        if not isinstance(backend, ARQBackgroundBackend):
            logger.error(
                "%s configures the %s backend, not ARQ, and has no WorkerSettings",
                args.module, backend.kind,
            )  # fmt: skip
            sys.exit(2)
        settings = backend.worker_settings()
    if args.parent:
        _watch_parent(args.parent)
    kwargs: dict[str, Any] = {"queue_name": arq_queue_name(args.queue)} if args.queue else {}
    worker = ResilientWorker(**{**get_kwargs(settings), **kwargs})
    state = getattr(settings, "pacificpy_state", None)
    if state is not None:
        if args.queue:
            state.queue = args.queue
        state.health.pipe = StatusWriter(args.status_fd)
        state.health.grace = args.health_grace
        worker.health = state.health
    worker.run()


if __name__ == "__main__":
    child_main()
