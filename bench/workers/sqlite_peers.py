"""The tasks of ``python -m bench sqlite``: PacificPy's SQLite backend and Huey's
``SqliteHuey`` on files in ``BENCH_SQLITE_DIR``, with the same bodies.

Worker processes import this module: ``python -m pacificpy.background.backends.sqlite.worker
bench.workers.sqlite_peers`` and ``huey_consumer bench.workers.sqlite_peers.huey``.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from huey import SqliteHuey

from pacificpy.background.decorators import background, configure_background_tasks

DIR = Path(os.environ.get("BENCH_SQLITE_DIR", "."))
#: Huey's default: ``synchronous=FULL`` (an fsync per commit: survives a power loss).
huey = SqliteHuey("bench", filename=str(DIR / "huey.db"))
#: ``fsync=False``: ``synchronous=OFF``, no fsync even at checkpoints (less durable than
#: PacificPy's ``NORMAL``), the fastest Huey can go.
huey_nofsync = SqliteHuey("bench-nofsync", filename=str(DIR / "huey-nofsync.db"), fsync=False)

RELEASE = threading.Event()
STARTED: list[float] = []
STARTED_EVENT = threading.Event()
_fd: list[int] = []


def _mark() -> None:
    """The e2e body: append one byte to ``done.bin`` (the parent waits for N bytes)."""
    if not _fd:
        _fd.append(os.open(DIR / "done.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
    os.write(_fd[0], b"x")


def _stamp() -> None:
    """The cross-process pickup probe: write when it started (time.time())."""
    tmp = DIR / f"probe.{os.getpid()}.{threading.get_ident()}"
    tmp.write_text(repr(time.time()))
    tmp.replace(DIR / "probe.txt")


# -- PacificPy ----------------------------------------------------------------------------
@background
def noop() -> None:
    pass


@background
def block() -> None:
    RELEASE.wait(120)


@background
def mark() -> None:
    _mark()


@background
def probe() -> None:
    STARTED.append(time.perf_counter())
    STARTED_EVENT.set()


@background
def file_probe() -> None:
    _stamp()


def configure_sqlite(*, consume: bool) -> Any:
    from pacificpy.background.backend import SQLiteBackgroundBackend

    backend = SQLiteBackgroundBackend(DIR / "tasks.db", 4, consume=consume)
    configure_background_tasks(backend)
    return backend


def configure_local(n: int) -> Any:
    from pacificpy.background.local import get_local_executor

    backend = get_local_executor(4, max_queue_size=n + 1000)
    configure_background_tasks(backend)
    return backend


if "BENCH_SQLITE_DIR" in os.environ:  # a worker process: the module configures the app
    configure_sqlite(consume=False)


# -- Huey ---------------------------------------------------------------------------------
HUEY: dict[str, dict[str, Any]] = {}

for _name, _huey in (("huey", huey), ("huey_nofsync", huey_nofsync)):
    HUEY[_name] = {
        "huey": _huey,
        "noop": _huey.task(name=f"{_name}.noop")(lambda: None),
        "mark": _huey.task(name=f"{_name}.mark")(_mark),
        "probe": _huey.task(name=f"{_name}.probe")(_stamp),
    }
