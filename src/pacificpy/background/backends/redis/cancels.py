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
a task is never lost to a cancel that cannot be read. (The copy, the thread and the
reconnects are :class:`~pacificpy.background.backends._tombstone_copy.TombstoneCopy`'s.)
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pacificpy.background.backends._tombstone_copy import TombstoneCopy
from pacificpy.background.backends.redis.clients import RedisClients
from pacificpy.background.backends.redis.keys import Keys

__all__ = ["CancelWatcher"]

#: How long a delivery waits for a new watcher's first load.
READY_WAIT = 5.0


def database(clients: RedisClients) -> int:
    """The Redis database number the clients use."""
    return int(clients.sync.connection_pool.connection_kwargs.get("db", 0) or 0)


class CancelWatcher(TombstoneCopy):
    """This process's copy of one Redis state's tombstones (task id -> expiry)."""

    store = "Redis"

    def __init__(self, clients: RedisClients, keys: Keys) -> None:
        super().__init__()
        self.clients = clients
        self.keys = keys

    @property
    def ready_wait(self) -> float:
        return READY_WAIT

    def _ask(self, task_id: str) -> bool:
        score = self.clients.sync.zscore(self.keys.cancelled, task_id)
        return score is not None and float(score) > time.time()

    def _session(self, ready: threading.Event, stopped: threading.Event) -> None:
        client = self.clients.sync
        pubsub: Any = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.keys.cancel_channel(database(self.clients)))
            now = time.time()
            for task_id, expires in client.zrangebyscore(
                self.keys.cancelled, now, "+inf", withscores=True
            ):
                self._note(task_id.decode(), float(expires), deliver=False)
            ready.set()
            while not stopped.is_set():
                message = pubsub.get_message(timeout=1.0)
                if message is not None and message.get("type") == "message":
                    self._heard(message["data"])
        finally:
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
        self._note(task_id, until)
