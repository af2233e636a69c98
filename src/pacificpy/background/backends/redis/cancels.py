"""A worker process's view of the tombstones in Redis, kept fresh over pub/sub.

``cancel.lua`` adds the task id to the ``P:cancelled`` zset and publishes it on the cancel
channel in one step. A process that runs tasks starts a :class:`CancelWatcher` the first
time it asks about a delivery: a daemon thread subscribes to the channel, then loads the
tombstones still alive (subscribing first, so a cancel in between is heard, none lost),
then listens. Each cancel heard goes into the process's copy and to
:func:`pacificpy.background.cancellation.deliver`, which stops the run if it is here.

So the check a delivery makes (``is_cancelled``) reads a dict: no Redis round trip per
task. A worker started after a cancel loads it (the tombstone's TTL is how long it is
remembered); a dropped connection reconnects and loads again. While the watcher is not
listening (Redis down) a delivery asks Redis directly, and runs if Redis cannot answer:
a task is never lost to a cancel that cannot be read.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from pacificpy.background import cancellation
from pacificpy.background.backends.redis.clients import RedisClients
from pacificpy.background.backends.redis.keys import Keys

__all__ = ["CancelWatcher"]

logger = logging.getLogger("pacificpy.background")

#: How long a delivery waits for a new watcher's first load.
READY_WAIT = 5.0
_PRUNE_AT = 10_000


def database(clients: RedisClients) -> int:
    """The Redis database number the clients use."""
    return int(clients.sync.connection_pool.connection_kwargs.get("db", 0) or 0)


class CancelWatcher:
    """This process's copy of one Redis state's tombstones (task id -> expiry)."""

    def __init__(self, clients: RedisClients, keys: Keys) -> None:
        self.clients = clients
        self.keys = keys
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
        try:  # not listening (yet): ask Redis itself
            score = self.clients.sync.zscore(self.keys.cancelled, task_id)
        except Exception as exc:
            logger.warning("could not read the tombstone of task %s, running it: %s", task_id, exc)
            return False
        return score is not None and float(score) > time.time()

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            # A forked child (a Celery pool process) starts its own: threads do not fork.
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
            pubsub: Any = None
            try:
                client = self.clients.sync
                channel = self.keys.cancel_channel(database(self.clients))
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(channel)
                now = time.time()
                for task_id, expires in client.zrangebyscore(
                    self.keys.cancelled, now, "+inf", withscores=True
                ):
                    self._known[task_id.decode()] = float(expires)
                ready.set()
                pause = 0.1
                while not stopped.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._heard(message["data"])
            except Exception as exc:
                ready.clear()
                if stopped.is_set():
                    return
                logger.warning("cancel watcher lost Redis (%s); reconnecting", exc)
                stopped.wait(pause)
                pause = min(pause * 2, 5.0)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass

    def _heard(self, data: bytes) -> None:
        task_id, _, expires = data.decode("utf-8", "replace").partition(" ")
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
