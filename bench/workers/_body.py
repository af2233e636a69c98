"""The job body every contender runs: count the job in Redis (that is its whole work).

``payload`` is one small JSON dict. ``{"n": N, ...}``: INCR a counter; the first job
stores when it finished, the N-th too and pushes to ``bench:done`` (the bench BLPOPs it).
``{"p": 1, ...}``: a pickup probe; it RPUSHes the time it started to ``bench:pickup``.
"""

from __future__ import annotations

import os
import time
from typing import Any

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0")

COUNT = "bench:count"
FIRST = "bench:t1"
LAST = "bench:tN"
DONE = "bench:done"
PICKUP = "bench:pickup"

_sync: Any = None
_aio: dict[int, Any] = {}


def _client() -> Any:
    global _sync
    if _sync is None:
        import redis

        _sync = redis.Redis.from_url(URL)
    return _sync


def body_sync(payload: dict[str, Any]) -> None:
    """The job, for sync workers."""
    if payload.get("p"):
        _client().rpush(PICKUP, repr(time.time()))
        return
    r = _client()
    n = r.incr(COUNT)
    if n == 1:
        r.set(FIRST, repr(time.time()))
    if n == payload["n"]:
        r.set(LAST, repr(time.time()))
        r.rpush(DONE, "1")


async def body_async(payload: dict[str, Any], client: Any = None) -> None:
    """The job, for asyncio workers (``client``: a redis.asyncio client, else our own)."""
    started = time.time()
    if client is None:
        import asyncio

        import redis.asyncio as aioredis

        key = id(asyncio.get_running_loop())
        client = _aio.get(key)
        if client is None:
            client = _aio[key] = aioredis.Redis.from_url(URL)
    if payload.get("p"):
        await client.rpush(PICKUP, repr(started))
        return
    n = await client.incr(COUNT)
    if n == 1:
        await client.set(FIRST, repr(time.time()))
    if n == payload["n"]:
        await client.set(LAST, repr(time.time()))
        await client.rpush(DONE, "1")
