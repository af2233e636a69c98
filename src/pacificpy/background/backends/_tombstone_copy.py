"""A process's copy of the tombstones of a state that announces its cancels (Redis pub/sub,
PostgreSQL ``LISTEN``/``NOTIFY``): the part both watchers share.

A subclass says how to listen (:meth:`TombstoneCopy._session`: subscribe first, then load
the live tombstones with :meth:`TombstoneCopy._note`, set ``ready``, then hand each
announcement to :meth:`TombstoneCopy._note` until ``stopped``) and how to ask the store
about one task while not listening (:meth:`TombstoneCopy._ask`). The copy starts a daemon
thread the first time a process asks (a forked child starts its own: threads and sockets
do not fork), reconnects with a backoff when the session fails, and answers a delivery
from memory once loaded; before that it asks the store, and runs the task if the store
cannot answer: a task is never lost to a cancel that cannot be read.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from pacificpy.background import cancellation

__all__ = ["TombstoneCopy"]

logger = logging.getLogger("pacificpy.background")

_PRUNE_AT = 10_000


class TombstoneCopy:
    """This process's copy of one state's tombstones (task id -> expiry, Unix seconds)."""

    #: Where the tombstones live, for log lines ("Redis", "PostgreSQL").
    store = "the store"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._known: dict[str, float] = {}
        self._ready = threading.Event()
        self._stopped = threading.Event()

    @property
    def ready_wait(self) -> float:
        """How long a delivery waits for a new watcher's first load."""
        return 5.0

    def _ask(self, task_id: str) -> bool:
        """Read ``task_id``'s tombstone from the store itself (one round trip)."""
        raise NotImplementedError

    def _session(self, ready: threading.Event, stopped: threading.Event) -> None:
        """Listen, load the live tombstones, set ``ready``, then note each announcement until
        ``stopped``; raise when the connection fails."""
        raise NotImplementedError

    def is_cancelled(self, task_id: str) -> bool:
        if self._pid != os.getpid():
            self._start()
        expires = self._known.get(task_id)
        if expires is not None:
            return expires > time.time()
        if self._ready.is_set():
            return False
        try:  # not listening (yet): ask the store itself
            return self._ask(task_id)
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
        ready.wait(self.ready_wait)

    def _listen(self, ready: threading.Event, stopped: threading.Event) -> None:
        pause = 0.1
        while not stopped.is_set():
            try:
                self._session(ready, stopped)
            except Exception as exc:
                if ready.is_set():  # it was listening: try again soon
                    pause = 0.1
                ready.clear()
                if stopped.is_set():
                    return
                logger.warning("cancel watcher lost %s (%s); reconnecting", self.store, exc)
                stopped.wait(pause)
                pause = min(pause * 2, 5.0)

    def _note(self, task_id: str, until: float, *, deliver: bool = True) -> None:
        """Remember ``task_id``'s tombstone; hand an announced one to a run of this process."""
        known = self._known
        if len(known) > _PRUNE_AT:
            now = time.time()
            self._known = known = {k: e for k, e in known.items() if e > now}
        known[task_id] = until
        if deliver:
            cancellation.deliver(task_id)

    def stop(self) -> None:
        """Stop listening (the state closes); the next question starts again."""
        with self._lock:
            self._stopped.set()
            self._pid = 0
