"""A worker process's view of the tombstones in PostgreSQL, kept fresh over LISTEN/NOTIFY.

:meth:`PostgresTaskState.cancel` lays the tombstone, stores the cancelled outcome and
sends ``NOTIFY pacificpy_cancels`` in one transaction (PostgreSQL delivers the
notification at commit). A process that runs tasks starts a :class:`CancelWatcher` the
first time it asks about a delivery: a daemon thread opens a connection of its own,
``LISTEN``s, then loads the tombstones still alive (listening first, so a cancel in
between is heard, none lost), then waits for notifications. Each one heard goes into the
process's copy and to :func:`pacificpy.background.cancellation.deliver`, which stops the
run if it is here.

So the check a delivery makes reads a dict: no round trip per task. A worker started
after a cancel loads it; a dropped connection reconnects and loads again. While the
watcher is not listening (PostgreSQL down) a delivery asks the table directly, and runs
if it cannot answer: a task is never lost to a cancel that cannot be read. A forked child
(a Celery prefork process) starts its own watcher: threads and sockets do not fork.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from pacificpy.background import cancellation
from pacificpy.background.backends.postgres import sql

__all__ = ["CancelWatcher"]

logger = logging.getLogger("pacificpy.background")

#: How long a delivery waits for a new watcher's first load.
READY_WAIT = 5.0
_PRUNE_AT = 10_000


class CancelWatcher:
    """This process's copy of one PostgreSQL state's tombstones (task id -> expiry).

    Args:
        connect: opens a new autocommit connection (the watcher's own, never pooled).
        ask: reads one task's tombstone directly (used while not listening).
    """

    def __init__(self, connect: Callable[[], Any], ask: Callable[[str], bool]) -> None:
        self.connect = connect
        self.ask = ask
        self._lock = threading.Lock()
        self._pid = 0
        self._known: dict[str, float] = {}
        self._ready = threading.Event()
        self._stopped = threading.Event()

    def is_cancelled(self, task_id: str) -> bool:
        if self._pid != os.getpid():
            self._start()
        expires = self._known.get(task_id)
        if expires is not None:
            return expires > time.time()
        if self._ready.is_set():
            return False
        try:  # not listening (yet): ask the table itself
            return self.ask(task_id)
        except Exception as exc:
            logger.warning("could not read the tombstone of task %s, running it: %s", task_id, exc)
            return False

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._known = {}
            self._ready = threading.Event()
            self._stopped = threading.Event()
            ready, stopped = self._ready, self._stopped
            threading.Thread(
                target=self._listen, args=(ready, stopped), name="pacificpy-cancels", daemon=True
            ).start()
        ready.wait(READY_WAIT)

    def _listen(self, ready: threading.Event, stopped: threading.Event) -> None:
        pause = 0.1
        while not stopped.is_set():
            conn: Any = None
            try:
                conn = self.connect()
                conn.execute(sql.LISTEN)
                rows = conn.execute(sql.LIVE_TOMBSTONES, (time.time(),)).fetchall()
                for task_id, expires in rows:
                    self._known[task_id] = float(expires)
                ready.set()
                pause = 0.1
                while not stopped.is_set():
                    for note in conn.notifies(timeout=1.0):
                        self._heard(note.payload)
            except Exception as exc:
                ready.clear()
                if stopped.is_set():
                    return
                logger.warning("cancel watcher lost PostgreSQL (%s); reconnecting", exc)
                stopped.wait(pause)
                pause = min(pause * 2, 5.0)
            finally:
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        pass

    def _heard(self, payload: str) -> None:
        task_id, _, expires = payload.partition(" ")
        try:
            until = float(expires)
        except ValueError:
            return
        known = self._known
        if len(known) > _PRUNE_AT:
            now = time.time()
            self._known = known = {k: e for k, e in known.items() if e > now}
        known[task_id] = until
        cancellation.deliver(task_id)

    def stop(self) -> None:
        """Stop listening (the state closes); the next question starts again."""
        with self._lock:
            self._stopped.set()
            self._pid = 0
