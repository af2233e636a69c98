"""Cancels laid by other processes, for the tasks this process runs on a SQLite file.

SQLite has no pub/sub: a process that runs tasks starts a :class:`CancelWatcher` with its
first delivery, a daemon thread that reads the tombstones laid since its last look every
``interval`` seconds (0.1 s: one indexed read of new rows) and hands each to
:func:`pacificpy.background.cancellation.deliver`, which stops the run if it is here. A
delivery itself asks the file (:meth:`SQLiteTaskState.is_cancelled`), so a task cancelled
before it starts never starts, whatever the watcher saw.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from pacificpy.background import cancellation
from pacificpy.background.backends.sqlite import sql
from pacificpy.background.backends.sqlite.db import Database

__all__ = ["CancelWatcher"]

logger = logging.getLogger("pacificpy.background")


class CancelWatcher:
    """Polls one file's tombstones for this process's running tasks."""

    def __init__(self, db: Database, interval: float = 0.1) -> None:
        self.db = db
        self.interval = interval
        self._lock = threading.Lock()
        self._pid = 0
        self._stopped = threading.Event()

    def start(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._stopped = stopped = threading.Event()
            since = int(self.db.one(sql.LAST_TOMBSTONE) or 0)
            threading.Thread(
                target=self._watch, args=(since, stopped), name="pacificpy-cancels", daemon=True
            ).start()

    def _watch(self, since: int, stopped: threading.Event) -> None:
        while not stopped.wait(self.interval):
            try:
                rows = self.db.execute(sql.BURIED_SINCE, (since, time.time())).fetchall()
            except Exception as exc:
                logger.warning("cancel watcher could not read %s: %s", self.db.path, exc)
                continue
            for seq, task_id in rows:
                since = max(since, seq)
                cancellation.deliver(task_id)

    def stop(self) -> None:
        with self._lock:
            self._stopped.set()
            self._pid = 0
