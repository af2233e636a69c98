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
from pacificpy.background.backends.sqlite.backend import SQLiteBackgroundBackend
from pacificpy.background.backends.sqlite.db import DatabaseError

__all__ = ["child_main", "serve", "supervise"]

logger = logging.getLogger("pacificpy.worker")


def supervise(
    backend: SQLiteBackgroundBackend,
    module: str,
    *,
    workers: int = 1,
    queues: Sequence[str] | None = None,
    log_level: str = "info",
) -> int:
    """Run ``workers`` worker processes on ``backend``'s file until SIGINT/SIGTERM."""
    backend.db.check()  # a file nobody can use: say so once, here, not in N crash loops
    return _arq_supervisor.supervise(
        module,
        workers=workers,
        queues=[",".join(queues) if queues else None],
        grace=backend.shutdown_timeout,
        log_level=log_level,
        child=__name__,
        label="SQLite",
    )


def serve(backend: SQLiteBackgroundBackend, queues: Sequence[str] | None = None) -> int:
    """Consume ``queues`` (default: ``default``) in this process until SIGINT/SIGTERM,
    then shut down gracefully. Returns the exit code."""
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
    sys.exit(serve(backend, queues))


if __name__ == "__main__":
    child_main()
