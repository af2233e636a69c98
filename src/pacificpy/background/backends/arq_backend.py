"""``ARQBackgroundBackend``: tasks as ARQ jobs in Redis, run by stock ``arq`` workers.

Producer side: one Redis round trip per ``.delay()`` (a Lua script that writes the job the
way ``ArqRedis.enqueue_job`` does, refuses a job id that is already queued or running, takes
the idempotency key and clears an old result of a requeued id). ``handle.id`` is the ARQ
job id. Queue ``"default"`` is ARQ's ``arq:queue``; any other queue ``q`` is
``arq:queue:q``.

Worker side: :meth:`ARQBackgroundBackend.worker_settings` gives the class for
``arq myapp.WorkerSettings``; ``pacificpy worker myapp --workers N`` runs N of them
(:meth:`ARQBackgroundBackend.run_worker`). Results are ARQ job results: the job function
returns the task's outcome, which ARQ writes to ``arq:result:<id>`` in the same
transaction that finishes the job (:class:`ARQTaskState` reads them there). Dead letters and
idempotency keys live in Redis
(:class:`~pacificpy.background.backends.redis.state.RedisTaskState`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import orjson
from arq.connections import RedisSettings
from arq.constants import (
    default_queue_name,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
)
from arq.worker import func
from redis.exceptions import RedisError

from pacificpy.background._jsonvalue import dumps_value
from pacificpy.background.backend import BackgroundBackend
from pacificpy.background.backends import _arq_worker
from pacificpy.background.backends._arq_worker import (
    ARQ_MAX_TRIES,
    EXPIRES_EXTRA_MS,
    JOB_NAME,
    WorkerState,
    job_serializer,
    make_job_deserializer,
)
from pacificpy.background.backends._common import check_reachable
from pacificpy.background.backends.redis.state import RedisTaskState
from pacificpy.background.monitor import get_task_monitor
from pacificpy.background.task import Message, Outcome
from pacificpy.background.workers import WorkerHealth
from pacificpy.errors import ConfigurationError
from pacificpy.types import TaskStatus

__all__ = ["ARQBackgroundBackend", "RedisSettings", "arq_queue_name"]


#: Running jobs passed over, at most, looking for the oldest waiting one.
OLDEST_SCAN = 1000
_OLDEST_PAGE = 100


def arq_queue_name(queue: str) -> str:
    """The ARQ queue (a Redis sorted set) that holds PacificPy queue ``queue``."""
    return default_queue_name if queue == "default" else f"{default_queue_name}:{queue}"


#: How far back one priority step moves a job's score (ms): a day, the longest a job
#: waits in the queue (its key expires ``EXPIRES_EXTRA_MS`` after its start time).
PRIORITY_STEP_MS = EXPIRES_EXTRA_MS


def arq_score(now_ms: int, delay_ms: int, priority: int) -> int:
    """The queue score (when ARQ may start it) of a job: ``now + delay``.

    ARQ starts the lowest scores due first, so a job due now with a priority is scored
    ``priority`` days in the past: ahead of every waiting job of a lower priority. A job
    with a delay keeps its due time (a lower score would start it early): among jobs due,
    it is ordered by that time.
    """
    if priority and not delay_ms:
        return now_ms - priority * PRIORITY_STEP_MS
    return now_ms + delay_ms


def _settings_url(settings: RedisSettings) -> str:
    if settings.sentinel or not isinstance(settings.host, str):
        raise ConfigurationError(
            "ARQBackgroundBackend does not support Redis Sentinel settings; give one host"
        )
    auth = ""
    if settings.username or settings.password:
        auth = quote(settings.username or "", safe="")
        if settings.password:
            auth += ":" + quote(settings.password, safe="")
        auth += "@"
    if settings.unix_socket_path:
        return f"unix://{auth}{settings.unix_socket_path}?db={settings.database}"
    scheme = "rediss" if settings.ssl else "redis"
    return f"{scheme}://{auth}{settings.host}:{settings.port}/{settings.database}"


def _outcome(raw: bytes | None) -> Outcome | None:
    """The task outcome kept in an ARQ result, or None if there is none yet."""
    if raw is None:
        return None
    try:
        d = orjson.loads(raw)
        r = d.get("r")
        if d.get("s") and isinstance(r, dict) and "status" in r:
            return Outcome.from_dict(r)
        # ARQ failed the job itself (expired, unknown function, ...)
        err = r if isinstance(r, dict) else {"error": str(r)}
        return Outcome(
            TaskStatus.FAILED,
            error=str(err.get("error")),
            error_type=str(err.get("error_type") or "JobExecutionFailed"),
            attempts=int(d.get("t") or 1),
            finished_at=(d.get("ft") or 0) / 1000,
        )
    except Exception as exc:
        return Outcome(
            TaskStatus.FAILED, error=f"unreadable ARQ result: {exc}", error_type="ResultError"
        )


class ARQTaskState(RedisTaskState):
    """The Redis task state, with outcomes read from ARQ's job results (``arq:result:<id>``,
    written by ARQ when the job function returns the outcome)."""

    def outcome_key(self, task_id: str) -> str:
        return result_key_prefix + task_id

    def load_outcome(self, raw: bytes | None) -> Outcome | None:
        return _outcome(raw)

    def dump_outcome(self, task_id: str, outcome: Outcome) -> bytes:
        """An ARQ job result holding ``outcome`` (a cancel writes it before the job runs)."""
        ms = int(outcome.finished_at * 1000)
        result = {"t": 0, "f": JOB_NAME, "a": [], "k": {}, "et": ms, "s": True,
                  "r": outcome.to_dict(), "st": ms, "ft": ms, "q": None}  # fmt: skip
        return dumps_value(result)


class ARQBackgroundBackend(BackgroundBackend):
    """Run ``@background`` tasks as ARQ jobs.

    Args:
        redis_settings: ARQ's ``RedisSettings`` (default: localhost:6379, database 0).
        allow_pickle: accept ``serializer="pickle"`` tasks (and pickled ARQ jobs). Only
            when every producer that can write to this Redis is trusted.
        shutdown_timeout: a worker's grace period on SIGTERM/SIGINT: running jobs get this
            long to finish before they are handed back (attempt not spent).
        max_deliveries: a message started this many times without finishing (its worker
            died each time) goes to the dead-letter queue as poison.
        poll_delay: seconds between a worker's polls of its queue. ARQ's 0.5 s default caps
            a worker near 200 jobs/s; PacificPy polls every 5 ms (pickup p50 under 5 ms).
        max_jobs: jobs one worker process runs at once (async tasks on its loop, sync tasks
            in its thread pool).
        result_ttl: seconds a task's outcome is kept for ``handle.result()``.
        in_progress_timeout: seconds a job stays claimed by its worker without a heartbeat.
            Running jobs are refreshed every third of it; a job whose worker was killed
            runs again elsewhere at most this long after the kill.
        key_prefix: prefix of PacificPy's own keys (dead letters, idempotency keys).
    """

    kind = "arq"

    def __init__(
        self,
        redis_settings: RedisSettings | None = None,
        *,
        allow_pickle: bool = False,
        shutdown_timeout: float = 30.0,
        max_deliveries: int = 5,
        poll_delay: float = 0.005,
        max_jobs: int = 10,
        result_ttl: float = 86_400.0,
        in_progress_timeout: float = 30.0,
        key_prefix: str = "pacificpy",
    ) -> None:
        super().__init__(
            allow_pickle=allow_pickle,
            shutdown_timeout=shutdown_timeout,
            max_deliveries=max_deliveries,
        )
        if max_jobs < 1:
            raise ConfigurationError("max_jobs must be at least 1")
        if poll_delay <= 0:
            raise ConfigurationError("poll_delay must be a positive number of seconds")
        if in_progress_timeout <= 0:
            raise ConfigurationError("in_progress_timeout must be positive")
        self.redis_settings = redis_settings if redis_settings is not None else RedisSettings()
        self.poll_delay = poll_delay
        self.max_jobs = max_jobs
        self.result_ttl = result_ttl
        self.in_progress_timeout = in_progress_timeout
        self.url = _settings_url(self.redis_settings)
        self._state = ARQTaskState(self.url, prefix=key_prefix, result_ttl=result_ttl)

    @property
    def state(self) -> ARQTaskState:
        """Dead letters and idempotency keys in Redis; outcomes in ARQ's job results."""
        return self._state

    def __repr__(self) -> str:
        return f"<ARQBackgroundBackend {self.url.rpartition('@')[2]}>"

    # -- producing -----------------------------------------------------------------------
    def _script_call(self, message: Message, delay: float | None) -> tuple[list[str], list[Any]]:
        """The keys and arguments of ``arq_enqueue.lua`` for ``message``."""
        env = message.envelope
        now_ms = int(time.time() * 1000)
        delay_ms = int(delay * 1000) if delay is not None and delay > 0 else 0
        idem = self.key_to_claim(env)
        task_id = env.task_id
        keys = [
            job_key_prefix + task_id,
            arq_queue_name(env.queue),
            result_key_prefix + task_id,
            self.state.idem_key(env.task_name, idem) if idem else "",
        ]
        args = [
            message.data,
            delay_ms + EXPIRES_EXTRA_MS,
            arq_score(now_ms, delay_ms, env.priority),
            task_id,
            max(1, int(self.idempotency_ttl)) if idem else 0,
            1 if env.attempt == 1 else 0,
        ]
        return keys, args

    enqueue_hint = "Is Redis running?"

    def enqueue_where(self) -> str:
        return f"on ARQ at {self.url.rpartition('@')[2]}"

    async def enqueue(self, message: Message, *, delay: float | None = None) -> None:
        """Write the job and queue it, in one round trip (``arq_enqueue.lua``).

        Raises:
            EnqueueError: Redis did not take it.
        """
        keys, args = self._script_call(message, delay)
        try:
            await self.state.clients.ascript("arq_enqueue")(keys, args)
        except (RedisError, OSError) as exc:
            raise self.enqueue_error(message, exc) from exc

    def enqueue_sync(self, message: Message, *, delay: float | None = None) -> None:
        """Blocking :meth:`enqueue` with the sync client (task threads, scripts)."""
        keys, args = self._script_call(message, delay)
        try:
            self.state.clients.script("arq_enqueue")(keys, args)
        except (RedisError, OSError) as exc:
            raise self.enqueue_error(message, exc) from exc

    # -- status --------------------------------------------------------------------------
    @staticmethod
    def _status(task_id: str, found: list[Any]) -> TaskStatus | None:
        result, in_progress, queued = found
        outcome = _outcome(result)
        if outcome is not None:
            return outcome.status
        if in_progress:
            return TaskStatus.RUNNING
        rec = get_task_monitor().get(task_id)
        if queued:
            if rec is not None and rec.status in (TaskStatus.RETRYING, TaskStatus.QUEUED):
                return rec.status
            return TaskStatus.QUEUED
        return rec.status if rec is not None else None

    def _status_keys(self, task_id: str) -> tuple[str, str, str]:
        return (
            result_key_prefix + task_id,
            in_progress_key_prefix + task_id,
            job_key_prefix + task_id,
        )

    async def get_status(self, task_id: str) -> TaskStatus | None:
        """From ARQ's keys: the result's status, running, queued; else the monitor's."""
        result, progress, job = self._status_keys(task_id)
        pipe = self.state.aio().pipeline(transaction=False)
        pipe.get(result)
        pipe.exists(progress)
        pipe.exists(job)
        return self._status(task_id, await pipe.execute())

    def get_status_sync(self, task_id: str) -> TaskStatus | None:
        """Blocking form of :meth:`get_status`."""
        result, progress, job = self._status_keys(task_id)
        pipe = self.state.sync.pipeline(transaction=False)
        pipe.get(result)
        pipe.exists(progress)
        pipe.exists(job)
        return self._status(task_id, pipe.execute())

    # -- queues and dead letters -----------------------------------------------------------
    async def queue_length(self, queue: str = "default") -> int:
        """Jobs in the ARQ queue: waiting, deferred (countdown, retry) and, as ARQ keeps
        them there until they finish, running."""
        return int(await self.state.aio().zcard(arq_queue_name(queue)))

    def queue_length_sync(self, queue: str = "default") -> int:
        """Blocking form of :meth:`queue_length`."""
        return int(self.state.sync.zcard(arq_queue_name(queue)))

    def oldest_waiting_sync(self, queue: str = "default") -> float | None:
        """When the oldest job of ``queue`` that is due and not running became due: the
        lowest score of the ARQ queue (ARQ keeps running jobs there too: those with an
        in-progress key are passed over, up to :data:`OLDEST_SCAN` of them)."""
        client = self.state.sync
        name = arq_queue_name(queue)
        now_ms = int(time.time() * 1000)
        for offset in range(0, OLDEST_SCAN, _OLDEST_PAGE):
            page = client.zrangebyscore(
                name, "-inf", now_ms, start=offset, num=_OLDEST_PAGE, withscores=True
            )
            if not page:
                return None
            pipe = client.pipeline(transaction=False)
            for job_id, _ in page:
                pipe.exists(in_progress_key_prefix + job_id.decode())
            for (_, score), running in zip(page, pipe.execute(), strict=True):
                if not running:
                    return float(score) / 1000
        return None

    # -- lifecycle -----------------------------------------------------------------------
    async def startup(self) -> None:
        """At app startup, PING Redis; if it does not answer, log a WARNING and go on."""
        await check_reachable("ARQ", self.url, self.state.aio().ping)

    async def shutdown(self) -> None:
        """Wait (up to ``shutdown_timeout``) for enqueues started on this loop; close clients."""
        loop = asyncio.get_running_loop()
        mine = [f for f in self._inflight if f.get_loop() is loop]
        if mine:
            await asyncio.wait(mine, timeout=self.shutdown_timeout)
        await self.state.aclose()
        self._stop_portal()

    def shutdown_sync(self, timeout: float | None = None) -> None:
        """Close the sync client (scripts and tests with no running loop)."""
        self.state.close()
        self._stop_portal()

    # -- workers -------------------------------------------------------------------------
    def worker_settings(self, queue: str = "default", **overrides: Any) -> type:
        """A class for ``arq myapp.WorkerSettings`` that runs this backend's tasks.

        Args:
            queue: the PacificPy queue this worker consumes.
            overrides: any other ``arq.worker.Worker`` setting (``max_jobs``, ``on_startup``
                ...). A replaced ``on_shutdown`` should await the original's.
        """
        state = WorkerState(self, queue=queue)

        async def pacificpy(ctx: dict[str, Any], data: bytes | str, **_: Any) -> Any:
            return await state.run(ctx, data)

        attrs: dict[str, Any] = {
            "functions": [
                func(pacificpy, name=JOB_NAME, max_tries=ARQ_MAX_TRIES, keep_result=self.result_ttl)
            ],
            "redis_settings": self.redis_settings,
            "queue_name": arq_queue_name(queue),
            "max_jobs": self.max_jobs,
            "poll_delay": self.poll_delay,
            # Timeouts are applied per task by PacificPy (execution.execute); an ARQ timeout
            # would end the job without its outcome being recorded.
            "job_timeout": None,
            "keep_result": self.result_ttl,
            "max_tries": ARQ_MAX_TRIES,
            "job_serializer": job_serializer,
            "job_deserializer": make_job_deserializer(self.allow_pickle, lambda: self.signing_key),
            "job_completion_wait": self.shutdown_timeout,
            "on_startup": state.on_startup,
            "on_shutdown": state.on_shutdown,
            "pacificpy_state": state,
        }
        attrs.update(overrides)
        return type("WorkerSettings", (), attrs)

    def run_worker(
        self,
        *,
        module: str | None = None,
        workers: int = 1,
        queues: Sequence[str] | None = None,
        log_level: str = "info",
        health: WorkerHealth | None = None,
    ) -> int:
        """Run ``workers`` ARQ worker processes per queue and supervise them.

        Each process imports ``module`` (which configures this backend) and runs its
        ``WorkerSettings`` if it has one, else :meth:`worker_settings`. A process that dies
        is restarted (and logged); SIGINT/SIGTERM stops them all gracefully. Returns the
        exit code.

        ``health`` gets one check per worker process: ready when it runs, consumes and
        reaches Redis (each process reports to the supervisor through a pipe).
        """
        from pacificpy.background.backends import _arq_supervisor

        if module is None:
            raise ConfigurationError("run_worker needs the module that configures the backend")
        return _arq_supervisor.supervise(
            module,
            workers=workers,
            queues=list(queues) if queues else [None],
            grace=self.shutdown_timeout,
            log_level=log_level,
            health=health,
        )


# Re-exported for users who want ARQ's own tools on PacificPy jobs.
job_deserializer = _arq_worker.job_deserializer
