"""``pacificpy worker myapp [--workers N]`` for the SQLite backend: N worker processes on
the app's file, supervised (restarted if one dies; SIGINT/SIGTERM stops them, each
finishing its running tasks within ``shutdown_timeout`` and handing back the rest).

Each worker process is ``python -m pacificpy.background.backends.sqlite.worker MODULE``:
it imports MODULE (which configures the backend, as the app does), then consumes the
given queues (default: ``default``) until it is told to stop.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from pacificpy.background.backends import _arq_supervisor
from pacificpy.background.backends._status_pipe import StatusWriter
from pacificpy.background.backends.sqlite.backend import SQLiteBackgroundBackend
from pacificpy.background.backends.sqlite.db import DatabaseError
from pacificpy.background.workers import DEFAULT_GRACE, Link, WorkerHealth

__all__ = ["child_main", "serve", "supervise"]

logger = logging.getLogger("pacificpy.worker")

#: Seconds between two looks at whether the file answers.
REPORT_EVERY = 0.5


def supervise(
    backend: SQLiteBackgroundBackend,
    module: str,
    *,
    workers: int = 1,
    queues: Sequence[str] | None = None,
    log_level: str = "info",
    health: WorkerHealth | None = None,
) -> int:
    """Run ``workers`` worker processes on ``backend``'s file until SIGINT/SIGTERM;
    ``health`` gets one check per process (it consumes and its file answers)."""
    backend.db.check()  # a file nobody can use: say so once, here, not in N crash loops
    return _arq_supervisor.supervise(
        module,
        workers=workers,
        queues=[",".join(queues) if queues else None],
        grace=backend.shutdown_timeout,
        log_level=log_level,
        child=__name__,
        label="SQLite",
        health=health,
    )


def _report_health(
    backend: SQLiteBackgroundBackend, pipe: StatusWriter, grace: float, stop: threading.Event
) -> None:
    """Tell the supervisor, as it changes, whether this process consumes and its file
    answers (after ``grace`` seconds of not answering, not ready; logged)."""
    link = Link(f"SQLite worker pid {os.getpid()}", grace)
    while not stop.wait(REPORT_EVERY):
        try:
            backend.state.ping()
        except Exception as exc:
            link.failed(exc)
        else:
            link.ok()
        pipe.send(*link.status())
    pipe.send(False, "stopping")


def serve(
    backend: SQLiteBackgroundBackend,
    queues: Sequence[str] | None = None,
    pipe: StatusWriter | None = None,
    grace: float = DEFAULT_GRACE,
) -> int:
    """Consume ``queues`` (default: ``default``) in this process until SIGINT/SIGTERM,
    then shut down gracefully. Returns the exit code. ``pipe`` gets the readiness."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        backend.queues = tuple(queues) if queues else ("default",)
        try:
            backend.start()
        except DatabaseError as exc:
            logger.error("%s", exc)
            return 1
        logger.info(
            "SQLite worker (pid %d) consuming %s from %s with %d workers",
            os.getpid(), ", ".join(backend.queues), backend.path, backend.max_workers,
        )  # fmt: skip
        if pipe is not None:
            threading.Thread(
                target=_report_health, args=(backend, pipe, grace, stop),
                name="pacificpy-health", daemon=True,
            ).start()  # fmt: skip
        stop.wait()
        logger.info("stopping: finishing running tasks (up to %ss)", backend.shutdown_timeout)
        backend.shutdown_sync()
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def child_main(argv: list[str] | None = None) -> None:
    """Entry point of one supervised worker process."""
    parser = argparse.ArgumentParser(prog="pacificpy-sqlite-worker")
    parser.add_argument("module")
    parser.add_argument("--queue", default=None, help="comma-separated queues")
    parser.add_argument("--parent", type=int, default=None)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--status-fd", type=int, default=None)
    parser.add_argument("--health-grace", type=float, default=DEFAULT_GRACE)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
    )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    import importlib

    from pacificpy.background.decorators import get_backend

    importlib.import_module(args.module)
    backend = get_backend()
    if not isinstance(backend, SQLiteBackgroundBackend):
        logger.error("%s configures the %s backend, not SQLite", args.module, backend.kind)
        sys.exit(2)
    if args.parent:
        _arq_supervisor._watch_parent(args.parent)
    queues = [q for q in args.queue.split(",") if q] if args.queue else None
    sys.exit(serve(backend, queues, StatusWriter(args.status_fd), args.health_grace))


if __name__ == "__main__":
    child_main()
