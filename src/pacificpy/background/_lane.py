"""The local executor's priority lane: messages with a priority above 0, highest first.

The executor's work line stays a plain FIFO (``SimpleQueue``) that costs nothing extra
for the common case. A message with a priority goes into the lane, and a :data:`TOKEN`
goes into the line in its place. Whatever a worker takes from the line (a message or a
token), it asks :meth:`PriorityLane.pick` what to run: while the lane holds anything, the
highest-priority message there (a plain message taken meanwhile waits in the lane, ahead
of later plain ones). The lane holds as many messages as the line holds tokens, so every
item taken from the line runs exactly one message.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from typing import Any

from pacificpy.background.task import Message

__all__ = ["TOKEN", "PriorityLane"]

#: Put in the work line for each message put in the lane.
TOKEN: Any = object()


class PriorityLane:
    """Waiting messages ordered by priority (higher first), then by arrival."""

    def __init__(self) -> None:
        #: The waiting messages (a heap); test it for emptiness without a call.
        self.heap: list[tuple[int, int, Message]] = []
        self._lock = threading.Lock()
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self.heap)

    def put(self, message: Message) -> None:
        """Keep ``message`` (its envelope's priority orders it); put a :data:`TOKEN` in
        the work line for it."""
        with self._lock:
            heapq.heappush(self.heap, (-message.envelope.priority, next(self._seq), message))

    def pick(self, item: Message | Any) -> Message:
        """The message to run for ``item`` taken from the work line.

        A token takes the lane's first message. A plain message runs itself unless the
        lane holds a message of higher priority: then that one runs, and the plain one
        waits in the lane (ahead of the plain messages still in the line).
        """
        with self._lock:
            heap = self.heap
            if item is TOKEN:
                return heapq.heappop(heap)[2]
            if not heap:
                return item
            # A plain message waiting in the lane is older than this one: it goes first.
            return heapq.heappushpop(heap, (0, next(self._seq), item))[2]
