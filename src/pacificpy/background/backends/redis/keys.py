"""The names of PacificPy's own Redis keys, in one place.

``P`` is the prefix (``pacificpy`` by default)::

    P:dlq                     hash   letter id -> letter JSON
    P:dlq:index               zset   letter id -> failed_at (newest last)
    P:result:<id>             string outcome JSON, expires after ``result_ttl``
    P:idem:<digest>           string task id, expires after the idempotency TTL; the digest
                                     is the SHA-256 of the JSON array [task name, key]
    P:deliveries:<id>:<n>     int    how many times a worker began attempt n (poison guard)
    P:flow:slots:<name>       zset   holder -> lease expiry (ms): task name's concurrency slots
    P:flow:starts:<name>      zset   holder -> start time (ms): task name's rate window
    P:cancelled               zset   task id -> tombstone expiry (epoch seconds)
    P:cancel:<db>             channel  "<task id> <expiry>" published on every cancel
    P:schedules               hash   task name -> its last enqueued schedule slot (Unix time)
    P:worker:<worker id>      string a worker's last heartbeat (JSON), expires after its TTL
    P:workers                 zset   worker id -> last heartbeat time (the registry's index)
"""

from __future__ import annotations

import hashlib

import orjson

__all__ = ["Keys"]


class Keys:
    """Key names under one prefix."""

    def __init__(self, prefix: str = "pacificpy") -> None:
        self.prefix = prefix
        self.dlq = f"{prefix}:dlq"
        self.dlq_index = f"{prefix}:dlq:index"
        self.cancelled = f"{prefix}:cancelled"
        self.schedules = f"{prefix}:schedules"
        self.workers = f"{prefix}:workers"

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def result(self, task_id: str) -> str:
        return f"{self.prefix}:result:{task_id}"

    def deliveries(self, task_id: str, attempt: int) -> str:
        return f"{self.prefix}:deliveries:{task_id}:{attempt}"

    def flow_slots(self, name: str) -> str:
        return f"{self.prefix}:flow:slots:{name}"

    def flow_starts(self, name: str) -> str:
        return f"{self.prefix}:flow:starts:{name}"

    def cancel_channel(self, db: int) -> str:
        """The pub/sub channel of cancels in database ``db`` (channels span databases)."""
        return f"{self.prefix}:cancel:{db}"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}"

    def idem(self, name: str, key: str) -> str:
        """The key of task ``name``'s idempotency key ``key``: one per pair.

        Joining the two with ``:`` would make task ``a`` with key ``b:c`` and task ``a:b``
        with key ``c`` share one key; the JSON array of the pair is unambiguous.
        """
        digest = hashlib.sha256(orjson.dumps([name, key])).hexdigest()
        return f"{self.prefix}:idem:{digest}"
