"""A worker process's view of the tombstones in PostgreSQL, kept fresh over LISTEN/NOTIFY.

:meth:`PostgresTaskState.cancel` lays the tombstone, stores the cancelled outcome and
sends ``NOTIFY pacificpy_cancels`` in one transaction (PostgreSQL delivers the
notification at commit). A process that runs tasks starts a :class:`CancelWatcher` the
first time it asks about a delivery: a daemon thread opens a connection of its own,
``LISTEN``s, then loads the tombstones still alive (listening first, so a cancel in
between is heard, none lost), then waits for notifications; each one heard goes into the
process's copy and to :func:`pacificpy.background.cancellation.deliver`, which stops the
run if it is here. The rest (a copy per process, reconnects, asking the table while not
listening) is :class:`~pacificpy.background.backends._tombstone_copy.TombstoneCopy`'s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from pacificpy.background.backends._tombstone_copy import TombstoneCopy
from pacificpy.background.backends.postgres import sql

__all__ = ["CancelWatcher"]

#: How long a delivery waits for a new watcher's first load.
READY_WAIT = 5.0


class CancelWatcher(TombstoneCopy):
    """This process's copy of one PostgreSQL state's tombstones.

    Args:
        connect: opens a new autocommit connection (the watcher's own, never pooled).
        ask: reads one task's tombstone directly (used while not listening).
    """

    store = "PostgreSQL"

    def __init__(self, connect: Callable[[], Any], ask: Callable[[str], bool]) -> None:
        super().__init__()
        self.connect = connect
        self.ask = ask

    @property
    def ready_wait(self) -> float:
        return READY_WAIT

    def _ask(self, task_id: str) -> bool:
        return self.ask(task_id)

    def _session(self, ready: threading.Event, stopped: threading.Event) -> None:
        conn = self.connect()
        try:
            conn.execute(sql.LISTEN)
            for task_id, expires in conn.execute(sql.LIVE_TOMBSTONES, (time.time(),)):
                self._note(task_id, float(expires), deliver=False)
            ready.set()
            while not stopped.is_set():
                for note in conn.notifies(timeout=1.0):
                    task_id, _, expires = note.payload.partition(" ")
                    try:
                        until = float(expires)
                    except ValueError:
                        continue
                    self._note(task_id, until)
        finally:
            conn.close()
