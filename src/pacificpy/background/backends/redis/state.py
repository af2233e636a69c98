"""The Redis :class:`~pacificpy.background.backends.state.TaskState`: outcomes, dead
letters, idempotency keys and delivery counts in one Redis database (key names in
:mod:`.keys`). Sync methods use redis-py; the ``a``-prefixed ones ``redis.asyncio``, one
client per event loop, so it works from any loop or thread."""

from __future__ import annotations

from typing import Any

import orjson

from pacificpy.background.backends.redis.clients import RedisClients
from pacificpy.background.backends.redis.keys import Keys
from pacificpy.background.backends.state import Ending, TaskState
from pacificpy.background.dead_letter import DeadLetter
from pacificpy.background.task import Outcome

__all__ = ["MAX_DEAD_LETTERS", "RedisState", "RedisTaskState"]

MAX_DEAD_LETTERS = 10_000


class RedisTaskState(TaskState):
    """A :class:`TaskState` in Redis.

    Args:
        url: the Redis URL.
        prefix: prefix of every key.
        result_ttl: seconds outcomes (and delivery counts) are kept.
    """

    def __init__(
        self, url: str, *, prefix: str = "pacificpy", result_ttl: float = 86_400.0
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.result_ttl = result_ttl
        self.keys = Keys(prefix)
        self.clients = RedisClients(url)
        self._trim_keys = [self.keys.dlq, self.keys.dlq_index]

    # -- clients -------------------------------------------------------------------------
    @property
    def sync(self) -> Any:
        """The sync client of this process."""
        return self.clients.sync

    def aio(self) -> Any:
        """The async client of the running event loop."""
        return self.clients.aio()

    async def aclose(self) -> None:
        await self.clients.aclose()

    def close(self) -> None:
        self.clients.close()

    def key(self, *parts: str) -> str:
        return self.keys.key(*parts)

    def idem_key(self, name: str, key: str) -> str:
        return self.keys.idem(name, key)

    # -- outcomes ------------------------------------------------------------------------
    def outcome_key(self, task_id: str) -> str:
        """The key that holds ``task_id``'s outcome."""
        return self.keys.result(task_id)

    def load_outcome(self, raw: bytes | None) -> Outcome | None:
        """The outcome stored as ``raw`` (None: no outcome yet)."""
        return Outcome.from_dict(orjson.loads(raw)) if raw else None

    def get_outcome(self, task_id: str) -> Outcome | None:
        return self.load_outcome(self.sync.get(self.outcome_key(task_id)))

    async def aget_outcome(self, task_id: str) -> Outcome | None:
        return self.load_outcome(await self.aio().get(self.outcome_key(task_id)))

    def store_outcome(self, task_id: str, outcome: Outcome) -> None:
        self.finish(Ending(task_id, outcome))

    def clear_outcome(self, task_id: str) -> None:
        self.sync.delete(self.outcome_key(task_id))

    # -- dead letters --------------------------------------------------------------------
    def _add_pipe(self, letter: DeadLetter, client: Any) -> Any:
        pipe = client.pipeline(transaction=False)
        pipe.hset(self.keys.dlq, letter.id, orjson.dumps(letter.to_dict()))
        pipe.zadd(self.keys.dlq_index, {letter.id: letter.failed_at})
        pipe.zcard(self.keys.dlq_index)
        return pipe

    def add_dead_letter(self, letter: DeadLetter) -> None:
        size = self._add_pipe(letter, self.sync).execute()[-1]
        if size > MAX_DEAD_LETTERS:
            self.clients.script("dlq_trim")(self._trim_keys, [MAX_DEAD_LETTERS])

    async def aadd_dead_letter(self, letter: DeadLetter) -> None:
        client = self.aio()
        size = (await self._add_pipe(letter, client).execute())[-1]
        if size > MAX_DEAD_LETTERS:
            await self.clients.ascript("dlq_trim")(self._trim_keys, [MAX_DEAD_LETTERS])

    def list_dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        ids = self.sync.zrevrange(self.keys.dlq_index, 0, limit - 1)
        if not ids:
            return []
        raw = self.sync.hmget(self.keys.dlq, ids)
        return [DeadLetter.from_dict(orjson.loads(r)) for r in raw if r is not None]

    def get_dead_letter(self, letter_id: str) -> DeadLetter | None:
        raw = self.sync.hget(self.keys.dlq, letter_id)
        return DeadLetter.from_dict(orjson.loads(raw)) if raw else None

    def pop_dead_letter(self, letter_id: str) -> DeadLetter | None:
        pipe = self.sync.pipeline(transaction=True)
        pipe.hget(self.keys.dlq, letter_id)
        pipe.hdel(self.keys.dlq, letter_id)
        pipe.zrem(self.keys.dlq_index, letter_id)
        raw = pipe.execute()[0]
        return DeadLetter.from_dict(orjson.loads(raw)) if raw else None

    def clear_dead_letters(self) -> int:
        pipe = self.sync.pipeline(transaction=True)
        pipe.zcard(self.keys.dlq_index)
        pipe.delete(self.keys.dlq, self.keys.dlq_index)
        return int(pipe.execute()[0])

    # -- idempotency keys ----------------------------------------------------------------
    def claim(self, name: str, key: str, task_id: str, ttl: float) -> bool:
        return bool(self.sync.set(self.keys.idem(name, key), task_id, nx=True, ex=int(ttl)))

    def release(self, name: str, key: str) -> None:
        self.sync.delete(self.keys.idem(name, key))

    # -- delivery counts -----------------------------------------------------------------
    def count_delivery(self, task_id: str, attempt: int) -> int:
        k = self.keys.deliveries(task_id, attempt)
        pipe = self.sync.pipeline(transaction=False)
        pipe.incr(k)
        pipe.expire(k, int(self.result_ttl))
        return int(pipe.execute()[0])

    def forget_deliveries(self, task_id: str, attempt: int) -> None:
        self.sync.delete(self.keys.deliveries(task_id, attempt))

    # -- the end of a delivery, in one round trip ----------------------------------------
    def _finish_pipe(self, client: Any, end: Ending) -> Any:
        pipe = client.pipeline(transaction=False)
        if end.deliveries is not None:
            pipe.delete(self.keys.deliveries(*end.deliveries))
        if end.release is not None:
            pipe.delete(self.keys.idem(*end.release))
        if end.task_id is not None and end.outcome is not None:
            outcome = orjson.dumps(end.outcome.to_dict())
            pipe.set(self.outcome_key(end.task_id), outcome, ex=int(self.result_ttl))
        return pipe

    def finish(self, end: Ending) -> None:
        task_id, outcome = end.task_id, end.outcome
        if end.deliveries is None and end.release is None and task_id and outcome is not None:
            # The common end (an outcome, nothing else): one SET, without a pipeline's cost.
            data = orjson.dumps(outcome.to_dict())
            self.sync.set(self.outcome_key(task_id), data, ex=int(self.result_ttl))
            return
        pipe = self._finish_pipe(self.sync, end)
        if len(pipe):
            pipe.execute()

    async def afinish(self, end: Ending) -> None:
        pipe = self._finish_pipe(self.aio(), end)
        if len(pipe):
            await pipe.execute()


#: The name the Celery and ARQ backends knew it by.
RedisState = RedisTaskState
