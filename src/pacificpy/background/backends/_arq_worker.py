"""The worker side of the ARQ backend: the one ARQ job function, its (de)serializers, and
the small pieces a stock ``arq`` worker needs to run PacificPy messages faithfully.

Job format. The value of ``arq:job:<id>`` is the PacificPy message itself (the bytes
``_codec.encode`` produced). :func:`job_deserializer` turns it into the dict ARQ expects,
naming the job function :data:`JOB_NAME` with the message as its one argument; jobs in
ARQ's own dict format (JSON, as :func:`job_serializer` writes them, e.g. enqueued with
``ArqRedis.enqueue_job``) pass through when every field has a type ARQ can use, and
anything else (garbage, pickle while pickle is refused or while a signing key is set, a
PacificPy job without exactly one message argument) is handed to the job function as a
message, which turns it into a dead letter. The deserializer never raises, so a malformed
job can never trip ARQ's worker.

Attempts, retries and the poison guard. The envelope's attempt is the source of truth. A
retry overwrites the job's value with the next attempt's message and raises ARQ's
``Retry(defer=...)``, so the job goes back to the queue and no worker slot is held while it
waits. ARQ counts every start of a job in ``arq:retry:<id>`` (``job_try``); starts beyond
the envelope's attempt are deliveries that never finished (the worker died), so
``job_try - attempt + 1 > max_deliveries`` makes the message poison.

Shutdown. On SIGTERM/SIGINT the worker stops taking jobs and waits ``shutdown_timeout``
(ARQ's ``job_completion_wait``); jobs still running then are cancelled by ARQ, which keeps
them queued. The job function gives back the ``job_try`` ARQ spent on them, so a handed-back
job costs neither an attempt nor a delivery.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import logging
import math
import pickle
import queue as queue_module
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.worker import Retry as ArqRetry

from pacificpy.background import execution
from pacificpy.background._jsonvalue import dumps_value
from pacificpy.background.backends._arq_health import ArqWorkerHealth
from pacificpy.background.execution import Decision
from pacificpy.background.monitor.previews import preview_call
from pacificpy.background.scheduler import start_scheduler, stop_scheduler
from pacificpy.background.task import Message
from pacificpy.errors import MessageRejected

if TYPE_CHECKING:
    from pacificpy.background.backends.arq_backend import ARQBackgroundBackend

__all__ = ["JOB_NAME", "JobMessage", "WorkerState", "job_deserializer", "job_serializer"]

logger = logging.getLogger("pacificpy.background")

#: Name of the ARQ function that runs every PacificPy task.
JOB_NAME = "pacificpy"
#: ARQ's own try limit, set out of reach: PacificPy's retry policy and poison guard decide.
ARQ_MAX_TRIES = 1_000_000
#: How long ARQ's in-progress key lives at pickup with ``job_timeout=None`` (seconds).
ARQ_PICKUP_LEASE = 10.0
#: Extra life of a job key past its start time, as ARQ does (ms).
EXPIRES_EXTRA_MS = 86_400_000
_SIGNED_BODY = 4 + 64 + 1  # len(b"pp1.") + hex digest + b"."


# -- (de)serialization ------------------------------------------------------------------
def job_serializer(obj: dict[str, Any]) -> bytes:
    """ARQ ``job_serializer``: JSON; a result of the PacificPy job drops the message copy."""
    if "s" in obj and obj.get("f") == JOB_NAME:
        obj = {**obj, "a": [], "k": {}}
    return dumps_value(obj)


#: Enqueue times (ms) ARQ is given; outside them ARQ's ``datetime`` conversion would raise.
_ET_RANGE = (0, 253_402_300_799_000)  # 1970 .. 9999-12-31


def _enqueue_ms(ts: Any) -> int:
    """ARQ's ``et`` for a message enqueued at ``ts`` (seconds); now if ``ts`` is unusable."""
    if type(ts) in (int, float) and math.isfinite(ts):
        ms = int(ts * 1000)
        if _ET_RANGE[0] <= ms <= _ET_RANGE[1]:
            return ms
    return int(time.time() * 1000)


class JobMessage(bytes):
    """The message bytes handed to the job function, shown by its task in arq's log.

    Stock ``arq`` logs every job as ``<job id>:pacificpy(<repr of the argument>)``; this
    ``repr`` is the task's name and a short preview of its arguments, secrets hidden
    (``send_email('ann@example.com', subject='Hi')``), not the raw message.
    """

    def __repr__(self) -> str:
        return job_listing(self)


#: Room for the arguments in a job's listing (arq cuts its whole line at 80 characters).
_LISTING_ARGS = 60


def job_listing(raw: bytes) -> str:
    """``task_name(args preview)`` of a PacificPy message, for logs; never raises."""
    try:
        body = raw[_SIGNED_BODY:] if raw.startswith(b"pp1.") else bytes(raw)
        d = orjson.loads(body)
        name = d["t"]
        if not isinstance(name, str):
            raise TypeError(name)
        if d.get("s") == "pickle":
            return f"{name}(<pickled arguments>)"
        args, kwargs = d.get("a", []), d.get("k", {})
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise TypeError(args)
        return f"{name}({preview_call(args, kwargs, _LISTING_ARGS, task=name)})"
    except Exception:
        return f"<not a PacificPy message: {len(raw)} bytes>"


def _message_job(raw: bytes, ts: Any) -> dict[str, Any]:
    return {"f": JOB_NAME, "a": (JobMessage(raw),), "k": {}, "t": None, "et": _enqueue_ms(ts)}


def _arq_job(d: dict[str, Any]) -> bool:
    """True if ``d`` is a job in ARQ's own dict format with every field of a type ARQ can use
    (a wrong one would raise inside ARQ's worker, outside any handler, and the job would be
    picked up again forever). PacificPy's own job takes exactly one message argument."""
    d.setdefault("a", [])
    d.setdefault("k", {})
    d.setdefault("t", None)
    d.setdefault("et", 0)
    args, kwargs, tries, et = d["a"], d["k"], d["t"], d["et"]
    if not (
        isinstance(d["f"], str)
        and isinstance(args, (list, tuple))
        and isinstance(kwargs, dict)
        and all(isinstance(k, str) for k in kwargs)
        and (tries is None or type(tries) is int)
        and type(et) in (int, float)
        and math.isfinite(et)
        and _ET_RANGE[0] <= et <= _ET_RANGE[1]
    ):
        return False
    if d["f"] == JOB_NAME:
        d["t"] = None  # the envelope counts attempts; a planted try count must not end it
        return len(args) == 1 and isinstance(args[0], (bytes, str)) and not kwargs
    return True


def make_job_deserializer(
    allow_pickle: bool, signing_key: Callable[[], bytes | None] | None = None
) -> Callable[[bytes], dict[str, Any]]:
    """ARQ ``job_deserializer`` that never raises (see the module docstring).

    ``signing_key`` returns the backend's key when called. While a key is set, a pickled
    ARQ job is never unpickled, ``allow_pickle`` or not: pickle only arrives inside a
    signed PacificPy message, whose signature the codec checks before unpickling. The raw
    bytes go to the job function instead, which dead-letters them as unsigned.
    """

    def job_deserializer(raw: bytes) -> dict[str, Any]:
        try:
            if not isinstance(raw, bytes):
                raw = bytes(raw)
            if raw.startswith(b"pp1."):
                body = orjson.loads(raw[_SIGNED_BODY:])
                return _message_job(raw, body.get("ts") if isinstance(body, dict) else None)
            if raw[:1] == b"{":
                d = orjson.loads(raw)
                if isinstance(d, dict):
                    if "f" in d and "v" not in d:
                        if _arq_job(d):
                            return d
                        return _message_job(raw, None)
                    return _message_job(raw, d.get("ts"))
            elif (
                allow_pickle
                and raw[:1] == b"\x80"
                and (signing_key is None or signing_key() is None)
            ):
                # No signing key: the user trusts every producer (documented).
                d = pickle.loads(raw)
                if isinstance(d, dict) and "f" in d and _arq_job(d):
                    return d
        except Exception:
            pass
        return _message_job(raw, None)

    return job_deserializer


job_deserializer = make_job_deserializer(False)


# -- threads for sync tasks -----------------------------------------------------------------
class DaemonThreadPool(cf.Executor):
    """A thread pool whose threads never keep the process alive.

    A sync task cannot be stopped; when a worker shuts down and hands such a task back,
    its thread must not hold the process open (``ThreadPoolExecutor`` joins at exit).
    """

    def __init__(self, max_workers: int, name: str = "pacificpy-arq") -> None:
        self._max = max_workers
        self._name = name
        self._work: queue_module.SimpleQueue[Any] = queue_module.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._pending = 0
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        fut: cf.Future[Any] = cf.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the thread pool is shut down")
            self._pending += 1
            spawn = self._pending > self._idle and self._threads < self._max
            if spawn:
                self._threads += 1
        self._work.put((fut, fn, args, kwargs))
        if spawn:
            threading.Thread(
                target=self._run, name=f"{self._name}-{self._threads}", daemon=True
            ).start()
        return fut

    def _run(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            item = self._work.get()
            with self._lock:
                self._idle -= 1
                if item is not None:
                    self._pending -= 1
            if item is None:
                return
            fut, fn, args, kwargs = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                fut.set_exception(exc)
            else:
                fut.set_result(result)
            del fut, fn, args, kwargs, item

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            n = self._threads
        for _ in range(n):
            self._work.put(None)


# -- the job function -----------------------------------------------------------------------
def _shown(value: object) -> bytes:
    """``value`` as JSON (or its ``repr``), to keep in the dead letter of a non-message."""
    try:
        return dumps_value(value)
    except Exception:
        return repr(value)[:100_000].encode("utf-8", "replace")


#: Value types JSON carries as they are (no conversion needed).
_PLAIN = frozenset({type(None), str, int, float, bool})


def _jsonable(outcome: dict[str, Any]) -> dict[str, Any]:
    """The outcome dict as its JSON reads back (a value JSON cannot carry as it is,
    converted as every store outside the process converts it). ARQ's job serializer would
    convert it too, but ARQ logs ``repr`` of the result first, and a raising ``repr`` there
    would record the completed job as failed."""
    if type(outcome["value"]) in _PLAIN:
        return outcome
    return orjson.loads(dumps_value(outcome))


class WorkerState:
    """What one ARQ worker process keeps for PacificPy: its thread pool, the jobs it runs
    (to refresh their in-progress lease), and how it carries out decisions."""

    def __init__(self, backend: ARQBackgroundBackend, queue: str = "default") -> None:
        self.backend = backend
        self.queue = queue
        self.lease = backend.in_progress_timeout
        self.pool: DaemonThreadPool | None = None
        #: job id -> task name, of the jobs this process runs now.
        self.running: dict[str, str] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        #: The worker registry and this process's health (see ``_arq_health``).
        self.health = ArqWorkerHealth(self)

    def _start(self, redis: Any) -> None:
        if self.pool is None:
            n = self.backend.max_jobs
            self.pool = DaemonThreadPool(max(2 * n, n + 4))
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat(redis))

    async def _beat(self, redis: Any) -> None:
        """Keep the in-progress keys of running jobs alive; a dead worker's expire."""
        interval = min(self.lease, ARQ_PICKUP_LEASE) / 3
        lease_ms = int(self.lease * 1000)
        while True:
            await asyncio.sleep(interval)
            if not self.running:
                continue
            try:
                pipe = redis.pipeline(transaction=False)
                for job_id in list(self.running):
                    pipe.pexpire(in_progress_key_prefix + job_id, lease_ms)
                await pipe.execute()
            except Exception:
                logger.exception("could not refresh the in-progress lease of running jobs")

    async def on_startup(self, ctx: dict[str, Any]) -> None:
        """ARQ ``on_startup``: register in the worker registry (the rest starts with the
        first job)."""
        self.health.start()
        logger.info(
            "PacificPy ARQ worker ready (max_jobs=%d, lease %.1fs, max_deliveries=%d)",
            self.backend.max_jobs, self.lease, self.backend.max_deliveries,
        )  # fmt: skip
        start_scheduler(self.backend)

    async def on_shutdown(self, ctx: dict[str, Any]) -> None:
        """ARQ ``on_shutdown``: leave the registry, stop the scheduler, the lease refresher
        and the thread pool."""
        stop_scheduler()
        await self.health.stop()
        beat, self._heartbeat = self._heartbeat, None
        if beat is not None:
            beat.cancel()
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.shutdown(wait=False)
        await self.backend.state.aclose()

    async def run(self, ctx: dict[str, Any], data: object) -> dict[str, Any] | None:
        """Run one delivery of one message and carry out the decision.

        Returns the outcome as a dict, which ARQ stores as the job's result.
        """
        redis = ctx["redis"]
        job_id: str = ctx["job_id"]
        self._start(redis)
        backend = self.backend
        if type(data) is JobMessage:
            data = bytes(data)  # orjson reads plain bytes only
        elif isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        elif not isinstance(data, bytes):
            # Only a job deserializer other than PacificPy's lets one through.
            shown = _shown(data)
            exc = MessageRejected(f"job argument is a {type(data).__name__}, not a message")
            return await self._settle(
                execution.reject(shown, exc, reason="rejected"), shown, redis, job_id
            )
        prep = execution.prepare(data, backend)
        if isinstance(prep, Decision):
            return await self._settle(prep, data, redis, job_id)
        env = prep[0]
        deliveries = int(ctx.get("job_try") or 1) - env.attempt + 1
        poison = backend.poison_guard(data, env, deliveries=deliveries)
        if poison is not None:
            return await self._settle(poison, data, redis, job_id)
        self.running[job_id] = env.task_name
        try:
            if self.lease < ARQ_PICKUP_LEASE:
                await redis.pexpire(in_progress_key_prefix + job_id, int(self.lease * 1000))
            decision = await execution.execute(
                data, backend, thread_executor=self.pool, prepared=prep
            )
        except asyncio.CancelledError:
            await self._hand_back(redis, job_id, env.task_name, env.attempt)
            raise
        finally:
            self.running.pop(job_id, None)
        return await self._settle(decision, data, redis, job_id)

    async def _hand_back(self, redis: Any, job_id: str, name: str, attempt: int) -> None:
        # ARQ keeps a cancelled job queued but has counted its start in arq:retry:<id>;
        # give that back so the hand-back spends neither an attempt nor a delivery.
        try:
            await redis.decr(retry_key_prefix + job_id)
        except Exception:
            logger.exception("could not give back the delivery count of job %s", job_id)
        logger.warning(
            "task %s %s handed back at shutdown; it will run again as attempt %d",
            name, job_id, attempt,
        )  # fmt: skip

    async def _settle(
        self, decision: Decision, data: bytes, redis: Any, job_id: str
    ) -> dict[str, Any] | None:
        """Settle ``decision``; return the outcome for ARQ to store as the job's result.

        A retry rewrites the job with the next attempt's message and raises ARQ's
        ``Retry``, which queues the job again after the delay.
        """

        async def publish(message: Message, delay: float) -> None:
            px = int(delay * 1000) + EXPIRES_EXTRA_MS
            await redis.set(job_key_prefix + job_id, message.data, px=px)
            raise ArqRetry(defer=delay)

        async def uncount() -> None:
            # A start a flow limit held back is no delivery: give back the job_try ARQ
            # counted (its next start counts it again), as a hand-back does.
            await redis.decr(retry_key_prefix + job_id)

        backend = self.backend
        await execution.settle_async(
            decision, data, backend.state, publish, signing_key=backend.signing_key,
            store_outcome=False, uncount=uncount,
        )  # fmt: skip
        if decision.outcome is None:
            return None
        return _jsonable(decision.outcome.to_dict())
