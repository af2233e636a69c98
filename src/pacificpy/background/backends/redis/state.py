"""The Redis :class:`~pacificpy.background.backends.state.TaskState`: outcomes, dead
letters, idempotency keys, delivery counts and flow-control leases and windows in one
Redis database (key names in :mod:`.keys`). Sync methods use redis-py; the ``a``-prefixed
ones ``redis.asyncio``, one client per event loop, so it works from any loop or thread."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from pacificpy.background import cancellation
from pacificpy.background.backends.redis.cancels import CancelWatcher, database
from pacificpy.background.backends.redis.clients import RedisClients
from pacificpy.background.backends.redis.keys import Keys
from pacificpy.background.backends.state import Ending, TaskState
from pacificpy.background.dead_letter import DeadLetter
from pacificpy.background.task import Outcome

if TYPE_CHECKING:
    from pacificpy.background.flow import Rate

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
        self.watcher = CancelWatcher(self.clients, self.keys)

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
        self.watcher.stop()
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

    def dump_outcome(self, task_id: str, outcome: Outcome) -> bytes:
        """``outcome`` as :meth:`load_outcome` reads it back."""
        return outcome.to_json()

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

    # -- flow control (flow_admit.lua, flow_renew.lua) ----------------------------------
    def _admit_call(
        self, name: str, holder: str, concurrency: int | None, rate: Rate | None, lease: float
    ) -> tuple[list[str], list[Any]]:
        keys = [self.keys.flow_slots(name), self.keys.flow_starts(name)]
        count, per = (rate.count, int(rate.per * 1000)) if rate is not None else (0, 0)
        return keys, [holder, concurrency or 0, count, per, max(1, int(lease * 1000))]

    @staticmethod
    def _admitted(answer: list[Any]) -> tuple[str, float] | None:
        kind, wait_ms = int(answer[0]), int(answer[1])
        if kind == 0:
            return None
        return ("concurrency" if kind == 1 else "rate_limit"), max(0, wait_ms) / 1000

    def admit(
        self, name: str, holder: str, concurrency: int | None, rate: Rate | None, lease: float
    ) -> tuple[str, float] | None:
        keys, args = self._admit_call(name, holder, concurrency, rate, lease)
        return self._admitted(self.clients.script("flow_admit")(keys, args))

    async def aadmit(
        self, name: str, holder: str, concurrency: int | None, rate: Rate | None, lease: float
    ) -> tuple[str, float] | None:
        keys, args = self._admit_call(name, holder, concurrency, rate, lease)
        return self._admitted(await self.clients.ascript("flow_admit")(keys, args))

    def renew_slots(self, held: list[tuple[str, str]], lease: float) -> None:
        keys = [self.keys.flow_slots(name) for name, _ in held]
        args: list[Any] = [max(1, int(lease * 1000)), *(holder for _, holder in held)]
        self.clients.script("flow_renew")(keys, args)

    def release_slot(self, name: str, holder: str) -> None:
        self.sync.zrem(self.keys.flow_slots(name), holder)

    async def arelease_slot(self, name: str, holder: str) -> None:
        await self.aio().zrem(self.keys.flow_slots(name), holder)

    # -- tombstones --------------------------------------------------------------------
    keeps_tombstones = True

    def cancel(self, task_id: str, outcome: Outcome, ttl: float) -> bool:
        now = time.time()
        args = [
            task_id,
            repr(now + ttl),
            repr(now),
            self.dump_outcome(task_id, outcome),
            max(1, int(self.result_ttl)),
            self.keys.cancel_channel(database(self.clients)),
        ]
        laid = bool(
            self.clients.script("cancel")([self.outcome_key(task_id), self.keys.cancelled], args)
        )
        if laid:
            cancellation.deliver(task_id)  # it may run in this very process
        return laid

    def is_cancelled(self, task_id: str) -> bool:
        return self.watcher.is_cancelled(task_id)

    # -- schedule slots ------------------------------------------------------------------
    keeps_schedules = True

    def last_schedule_slot(self, name: str) -> float | None:
        raw = self.sync.hget(self.keys.schedules, name)
        return float(raw) if raw is not None else None

    def advance_schedule_slot(self, name: str, slot: float, expected: float | None) -> bool:
        script = self.clients.script("schedule_advance")
        was = "" if expected is None else repr(float(expected))
        return bool(script([self.keys.schedules], [name, repr(float(slot)), was]))

    # -- the worker registry ---------------------------------------------------------------
    keeps_workers = True

    def _put_worker_pipe(
        self, client: Any, worker_id: str, record: dict[str, Any], ttl: float
    ) -> Any:
        pipe = client.pipeline(transaction=False)
        pipe.set(self.keys.worker(worker_id), orjson.dumps(record), px=max(1, int(ttl * 1000)))
        pipe.zadd(self.keys.workers, {worker_id: float(record.get("last_seen") or 0.0)})
        return pipe

    def put_worker(self, worker_id: str, record: dict[str, Any], ttl: float) -> None:
        self._put_worker_pipe(self.sync, worker_id, record, ttl).execute()

    async def aput_worker(self, worker_id: str, record: dict[str, Any], ttl: float) -> None:
        await self._put_worker_pipe(self.aio(), worker_id, record, ttl).execute()

    def remove_worker(self, worker_id: str) -> None:
        pipe = self.sync.pipeline(transaction=False)
        pipe.delete(self.keys.worker(worker_id))
        pipe.zrem(self.keys.workers, worker_id)
        pipe.execute()

    async def aremove_worker(self, worker_id: str) -> None:
        pipe = self.aio().pipeline(transaction=False)
        pipe.delete(self.keys.worker(worker_id))
        pipe.zrem(self.keys.workers, worker_id)
        await pipe.execute()

    def list_worker_records(self) -> list[dict[str, Any]]:
        """The records of the index whose key lives; ids whose key expired leave the index."""
        found = self.sync.zrange(self.keys.workers, 0, -1)
        ids = [i.decode() if isinstance(i, bytes) else i for i in found]
        if not ids:
            return []
        raw = self.sync.mget([self.keys.worker(i) for i in ids])
        gone = [i for i, r in zip(ids, raw, strict=True) if r is None]
        if gone:
            self.sync.zrem(self.keys.workers, *gone)
        return [orjson.loads(r) for r in raw if r is not None]

    def ping(self) -> None:
        self.sync.ping()

    # -- the end of a delivery, in one round trip ----------------------------------------
    def _finish_pipe(self, client: Any, end: Ending) -> Any:
        pipe = client.pipeline(transaction=False)
        if end.deliveries is not None:
            pipe.delete(self.keys.deliveries(*end.deliveries))
        if end.release is not None:
            pipe.delete(self.keys.idem(*end.release))
        if end.task_id is not None and end.outcome is not None:
            outcome = end.outcome.to_json()
            pipe.set(self.outcome_key(end.task_id), outcome, ex=int(self.result_ttl))
        return pipe

    def finish(self, end: Ending) -> None:
        task_id, outcome = end.task_id, end.outcome
        if end.deliveries is None and end.release is None and task_id and outcome is not None:
            # The common end (an outcome, nothing else): one SET, without a pipeline's cost.
            data = outcome.to_json()
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
