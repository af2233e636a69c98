"""Redis-side state shared by the Redis backends: dead letters, outcomes, idempotency keys
and delivery counts. Each operation has a sync form (redis-py) and an async one
(``redis.asyncio``, one client per event loop, so it works from any loop or thread).

Keys (``P`` is the prefix, ``pacificpy`` by default)::

    P:dlq            hash   letter id -> letter JSON
    P:dlq:index      zset   letter id -> failed_at (newest last)
    P:result:<id>    string outcome JSON, expires after ``result_ttl``
    P:idem:<digest>  string task id, expires after the idempotency TTL; the digest is
                     the SHA-256 of the JSON array [task name, key] (see ``idem_key``)
    P:deliveries:<id> int   how many times a worker began this task (poison guard)
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import weakref
from typing import TYPE_CHECKING, Any

import orjson

from pacificpy.background.dead_letter import DeadLetter
from pacificpy.background.task import Outcome

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis

__all__ = ["RedisState"]

MAX_DEAD_LETTERS = 10_000


class RedisState:
    """Dead letters, outcomes, idempotency and delivery counts in one Redis database."""

    def __init__(
        self, url: str, *, prefix: str = "pacificpy", result_ttl: float = 86_400.0
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.result_ttl = result_ttl
        self._sync: redis.Redis | None = None
        self._lock = threading.Lock()
        self._aio: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
            weakref.WeakKeyDictionary()
        )

    # -- clients -------------------------------------------------------------------------
    @property
    def sync(self) -> Any:  # redis-py's sync/async union types defeat mypy
        """The sync client (thread-safe connection pool)."""
        client = self._sync
        if client is None:
            import redis

            with self._lock:
                if self._sync is None:
                    self._sync = redis.Redis.from_url(self.url)
                client = self._sync
        return client

    def aio(self) -> Any:
        """The async client of the running event loop."""
        import redis.asyncio as aioredis

        loop = asyncio.get_running_loop()
        client = self._aio.get(loop)
        if client is None:
            client = self._aio[loop] = aioredis.Redis.from_url(self.url)
        return client

    async def aclose(self) -> None:
        """Close the running loop's async client."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        client = self._aio.pop(loop, None)
        if client is not None:
            await client.aclose()

    def close(self) -> None:
        """Close the sync client; async clients go with their loops."""
        with self._lock:
            client, self._sync = self._sync, None
        if client is not None:
            client.close()

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def idem_key(self, name: str, key: str) -> str:
        """The Redis key of task ``name``'s idempotency key ``key``: one per pair.

        Joining the two with ``:`` would make task ``a`` with key ``b:c`` and task ``a:b``
        with key ``c`` share one key; the JSON array of the pair is unambiguous.
        """
        digest = hashlib.sha256(orjson.dumps([name, key])).hexdigest()
        return self.key("idem", digest)

    # -- dead letters --------------------------------------------------------------------
    def _dlq_add_pipe(self, pipe: Any, letter: DeadLetter) -> None:
        pipe.hset(self.key("dlq"), letter.id, orjson.dumps(letter.to_dict()))
        pipe.zadd(self.key("dlq", "index"), {letter.id: letter.failed_at})

    def dlq_add(self, letter: DeadLetter) -> None:
        pipe = self.sync.pipeline(transaction=False)
        self._dlq_add_pipe(pipe, letter)
        pipe.execute()
        self._dlq_trim_sync()

    async def adlq_add(self, letter: DeadLetter) -> None:
        pipe = self.aio().pipeline(transaction=False)
        self._dlq_add_pipe(pipe, letter)
        await pipe.execute()
        await self._dlq_trim()

    def _dlq_trim_sync(self) -> None:
        extra = self.sync.zcard(self.key("dlq", "index")) - MAX_DEAD_LETTERS
        if extra > 0:
            old = self.sync.zrange(self.key("dlq", "index"), 0, extra - 1)
            self.sync.hdel(self.key("dlq"), *old)
            self.sync.zrem(self.key("dlq", "index"), *old)

    async def _dlq_trim(self) -> None:
        client = self.aio()
        extra = await client.zcard(self.key("dlq", "index")) - MAX_DEAD_LETTERS
        if extra > 0:
            old = await client.zrange(self.key("dlq", "index"), 0, extra - 1)
            await client.hdel(self.key("dlq"), *old)
            await client.zrem(self.key("dlq", "index"), *old)

    @staticmethod
    def _letters(raw: list[bytes | None]) -> list[DeadLetter]:
        return [DeadLetter.from_dict(orjson.loads(r)) for r in raw if r is not None]

    def dlq_list(self, limit: int = 100) -> list[DeadLetter]:
        ids = self.sync.zrevrange(self.key("dlq", "index"), 0, limit - 1)
        return self._letters(self.sync.hmget(self.key("dlq"), ids)) if ids else []

    async def adlq_list(self, limit: int = 100) -> list[DeadLetter]:
        client = self.aio()
        ids = await client.zrevrange(self.key("dlq", "index"), 0, limit - 1)
        return self._letters(await client.hmget(self.key("dlq"), ids)) if ids else []

    def dlq_get(self, letter_id: str) -> DeadLetter | None:
        raw = self.sync.hget(self.key("dlq"), letter_id)
        return DeadLetter.from_dict(orjson.loads(raw)) if raw else None

    async def adlq_get(self, letter_id: str) -> DeadLetter | None:
        raw = await self.aio().hget(self.key("dlq"), letter_id)
        return DeadLetter.from_dict(orjson.loads(raw)) if raw else None

    def dlq_pop(self, letter_id: str) -> DeadLetter | None:
        pipe = self.sync.pipeline(transaction=True)
        pipe.hget(self.key("dlq"), letter_id)
        pipe.hdel(self.key("dlq"), letter_id)
        pipe.zrem(self.key("dlq", "index"), letter_id)
        raw = pipe.execute()[0]
        return DeadLetter.from_dict(orjson.loads(raw)) if raw else None

    async def adlq_pop(self, letter_id: str) -> DeadLetter | None:
        pipe = self.aio().pipeline(transaction=True)
        pipe.hget(self.key("dlq"), letter_id)
        pipe.hdel(self.key("dlq"), letter_id)
        pipe.zrem(self.key("dlq", "index"), letter_id)
        raw = (await pipe.execute())[0]
        return DeadLetter.from_dict(orjson.loads(raw)) if raw else None

    def dlq_purge(self) -> int:
        pipe = self.sync.pipeline(transaction=True)
        pipe.zcard(self.key("dlq", "index"))
        pipe.delete(self.key("dlq"), self.key("dlq", "index"))
        return int(pipe.execute()[0])

    async def adlq_purge(self) -> int:
        pipe = self.aio().pipeline(transaction=True)
        pipe.zcard(self.key("dlq", "index"))
        pipe.delete(self.key("dlq"), self.key("dlq", "index"))
        return int((await pipe.execute())[0])

    # -- outcomes ------------------------------------------------------------------------
    def result_set(self, task_id: str, outcome: Outcome) -> None:
        self.sync.set(
            self.key("result", task_id), orjson.dumps(outcome.to_dict()), ex=int(self.result_ttl)
        )

    async def aresult_set(self, task_id: str, outcome: Outcome) -> None:
        await self.aio().set(
            self.key("result", task_id), orjson.dumps(outcome.to_dict()), ex=int(self.result_ttl)
        )

    def result_get(self, task_id: str) -> Outcome | None:
        raw = self.sync.get(self.key("result", task_id))
        return Outcome.from_dict(orjson.loads(raw)) if raw else None

    async def aresult_get(self, task_id: str) -> Outcome | None:
        raw = await self.aio().get(self.key("result", task_id))
        return Outcome.from_dict(orjson.loads(raw)) if raw else None

    def result_clear(self, task_id: str) -> None:
        self.sync.delete(self.key("result", task_id))

    async def aresult_clear(self, task_id: str) -> None:
        await self.aio().delete(self.key("result", task_id))

    # -- idempotency ---------------------------------------------------------------------
    def claim(self, name: str, key: str, task_id: str, ttl: float) -> bool:
        """True if this call took the key (so the task should be enqueued)."""
        return bool(self.sync.set(self.idem_key(name, key), task_id, nx=True, ex=int(ttl)))

    async def aclaim(self, name: str, key: str, task_id: str, ttl: float) -> bool:
        return bool(await self.aio().set(self.idem_key(name, key), task_id, nx=True, ex=int(ttl)))

    def release(self, name: str, key: str) -> None:
        self.sync.delete(self.idem_key(name, key))

    async def arelease(self, name: str, key: str) -> None:
        await self.aio().delete(self.idem_key(name, key))

    # -- deliveries (poison guard) -------------------------------------------------------
    def delivered(self, task_id: str, attempt: int) -> int:
        """Count one more start of ``task_id``'s ``attempt``; return the count."""
        k = self.key("deliveries", task_id, str(attempt))
        pipe = self.sync.pipeline(transaction=False)
        pipe.incr(k)
        pipe.expire(k, int(self.result_ttl))
        return int(pipe.execute()[0])

    async def adelivered(self, task_id: str, attempt: int) -> int:
        k = self.key("deliveries", task_id, str(attempt))
        pipe = self.aio().pipeline(transaction=False)
        pipe.incr(k)
        pipe.expire(k, int(self.result_ttl))
        return int((await pipe.execute())[0])

    def delivery_done(self, task_id: str, attempt: int) -> None:
        self.sync.delete(self.key("deliveries", task_id, str(attempt)))

    async def adelivery_done(self, task_id: str, attempt: int) -> None:
        await self.aio().delete(self.key("deliveries", task_id, str(attempt)))

    # == Celery backend ====================================================================
    # Added for CeleryBackgroundBackend: everything a worker writes when a delivery ends,
    # in one round trip.
    def settle(
        self,
        task_id: str | None,
        outcome: Outcome | None,
        *,
        deliveries: tuple[str, int] | None = None,
        release: tuple[str, str] | None = None,
    ) -> None:
        """Store ``outcome``, forget a delivery count and release an idempotency key, pipelined.

        Args:
            task_id: the task whose ``outcome`` is stored (nothing stored when either is None).
            outcome: the final outcome.
            deliveries: ``(task_id, attempt)`` whose poison-guard count is deleted.
            release: ``(task_name, idempotency_key)`` to release.
        """
        pipe = self.sync.pipeline(transaction=False)
        if task_id is not None and outcome is not None:
            pipe.set(
                self.key("result", task_id),
                orjson.dumps(outcome.to_dict()),
                ex=int(self.result_ttl),
            )
        if deliveries is not None:
            pipe.delete(self.key("deliveries", deliveries[0], str(deliveries[1])))
        if release is not None:
            pipe.delete(self.idem_key(*release))
        if len(pipe):
            pipe.execute()
