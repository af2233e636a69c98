"""The Celery backend: ``@background`` tasks run by a stock ``celery worker``.

Every task registered with PacificPy is registered with the Celery app as a Celery task
of the same name, so ``celery -A myapp worker`` runs them. A Celery task's one argument is
the PacificPy message (the signed bytes of :mod:`pacificpy.background._codec`, as text); its
body hands it to :func:`pacificpy.background.execution.execute_sync` and carries out the
decision: store the outcome, publish the next attempt with a countdown, or keep a dead
letter.

Producing. With a Redis broker a message is pushed straight onto the queue's Redis list
(``LPUSH``, the exact frame kombu's Redis transport writes, Celery protocol 2): one round
trip, no producer pool. From an event loop the push goes through one publisher thread that
pipelines whatever is waiting, so ``.delay()`` never blocks the loop. With another broker
(AMQP...) ``send_task`` is used, with publish retries off so a dead broker fails fast.

State. Outcomes, dead letters, idempotency keys and the poison-guard counts live in Redis
(:class:`~pacificpy.background.backends._redis.RedisState`): the broker's Redis by
default, or ``redis_url=``. ``handle.result()`` always reads the outcome PacificPy stored
there; Celery's result backend is not written for PacificPy tasks (``ignore_result``).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures as cf
import datetime as dt
import logging
import os
import queue as queue_module
import socket
import sys
import threading
import time
import weakref
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import orjson
from celery import Celery

from pacificpy.background import _codec, execution, registry
from pacificpy.background.backend import BackgroundBackend
from pacificpy.background.backends._redis import RedisState
from pacificpy.background.dead_letter import DeadLetter
from pacificpy.background.execution import Decision
from pacificpy.background.monitor import get_task_monitor
from pacificpy.background.task import Message, Outcome, TaskEnvelope, TaskSpec, new_task_id
from pacificpy.errors import (
    ConfigurationError,
    EnqueueError,
    MessageRejected,
    PacificPyError,
    TaskNotFound,
)
from pacificpy.types import TaskStatus

if TYPE_CHECKING:
    import redis

__all__ = ["AT_LEAST_ONCE_DEFAULTS", "CeleryBackgroundBackend"]

logger = logging.getLogger("pacificpy.background")

#: Celery settings PacificPy sets unless the user set them (SPEC §4.2).
AT_LEAST_ONCE_DEFAULTS: dict[str, Any] = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "broker_connection_retry_on_startup": True,
}

_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_PRIORITY_SEP = "\x06\x16"
_DEFAULT_PRIORITY_STEPS = (0, 3, 6, 9)
_BATCH = 512
_REQUEST_CLS = "pacificpy.background.backends._celery_worker:PacificRequest"

# Celery app -> the backend that serves it (the last one attached), for worker-side hooks.
_BACKENDS: weakref.WeakKeyDictionary[Celery, CeleryBackgroundBackend] = weakref.WeakKeyDictionary()


# Celery app -> task names registered on it (``app.tasks`` would finalize the app).
_REGISTERED: weakref.WeakKeyDictionary[Celery, set[str]] = weakref.WeakKeyDictionary()


def backend_for(celery_app: Any) -> CeleryBackgroundBackend | None:
    """The PacificPy backend attached to ``celery_app``, if any."""
    try:
        return _BACKENDS.get(celery_app)
    except TypeError:
        return None


class CeleryBackgroundBackend(BackgroundBackend):
    """Run ``@background`` tasks on Celery workers.

    Args:
        celery_app: the ``Celery`` application; its broker carries the tasks.
        allow_pickle: accept tasks declared with ``serializer="pickle"``.
        shutdown_timeout: seconds :meth:`shutdown` waits for enqueues still in flight.
        max_deliveries: a message delivered this many times without finishing (its
            worker died each time) goes to the dead-letter queue as poison.
        redis_url: the Redis for outcomes, dead letters, idempotency keys and delivery
            counts; by default the broker's, which must then be ``redis://``.
        key_prefix: prefix of those Redis keys.
        result_ttl: seconds outcomes are kept.
        time_limit_grace: seconds between a task's soft time limit (its ``timeout``) and
            Celery's hard limit, which kills the worker process.

    Unless set on the Celery app, ``task_acks_late=True``, ``task_reject_on_worker_lost=True``
    and ``worker_prefetch_multiplier=1`` are applied (at-least-once delivery).

    Raises:
        ConfigurationError: ``celery_app`` is not a Celery app.
    """

    kind: ClassVar[str] = "celery"

    def __init__(
        self,
        celery_app: Celery,
        *,
        allow_pickle: bool = False,
        shutdown_timeout: float = 30.0,
        max_deliveries: int = 5,
        redis_url: str | None = None,
        key_prefix: str = "pacificpy",
        result_ttl: float = 86_400.0,
        time_limit_grace: float = 5.0,
    ) -> None:
        if not isinstance(celery_app, Celery):
            raise ConfigurationError(
                f"CeleryBackgroundBackend needs a celery.Celery app, not {type(celery_app)!r}"
            )
        super().__init__(
            allow_pickle=allow_pickle,
            shutdown_timeout=shutdown_timeout,
            max_deliveries=max_deliveries,
        )
        self.celery_app = celery_app
        self.time_limit_grace = time_limit_grace
        self._redis_url = redis_url
        self._key_prefix = key_prefix
        self._result_ttl = result_ttl
        self._state: RedisState | None = None
        self._broker_info: _BrokerInfo | None = None
        self._client: redis.Redis | None = None
        self._client_pid = 0
        self._lock = threading.Lock()
        self._publisher: _Publisher | None = None
        self._subscribed = False
        self._origin = ""
        self._origin_pid = 0
        _apply_defaults(celery_app)
        _BACKENDS[celery_app] = self
        self._subscribe()
        _connect_worker_signals()

    def __repr__(self) -> str:
        return f"<CeleryBackgroundBackend app={self.celery_app.main!r}>"

    # -- configuration -------------------------------------------------------------------
    def attach(self) -> None:
        """Called by ``configure_background_tasks``: serve this Celery app and its CLI."""
        _BACKENDS[self.celery_app] = self
        self._subscribe()
        _answer_celery_cli(self.celery_app)

    def _subscribe(self) -> None:
        if not self._subscribed:
            self._subscribed = True
            registry.subscribe(self._register_task)

    def _register_task(self, spec: TaskSpec) -> None:
        """Register ``spec`` with Celery under its own name (the worker runs it by name)."""
        app = self.celery_app
        names = _REGISTERED.setdefault(app, set())
        if spec.name in names:
            return
        names.add(spec.name)
        soft = spec.timeout
        hard = soft + self.time_limit_grace if soft else None

        def run(task: Any, data: str) -> None:
            backend = _BACKENDS.get(task.app)
            if backend is None:  # pragma: no cover - the app always has one here
                raise RuntimeError(f"no PacificPy backend serves Celery app {task.app!r}")
            info = task.request.delivery_info or {}
            backend.deliver(data, redelivered=bool(info.get("redelivered")))

        run.__name__ = spec.name.rpartition(".")[2] or "task"
        run.__qualname__ = run.__name__
        run.__module__ = getattr(spec.fn, "__module__", __name__)
        run.__doc__ = getattr(spec.fn, "__doc__", None)
        app.task(
            name=spec.name,
            bind=True,
            shared=False,
            typing=False,
            ignore_result=True,
            soft_time_limit=soft,
            time_limit=hard,
            Request=_REQUEST_CLS,
        )(run)

    @property
    def state(self) -> RedisState:
        """Where outcomes, dead letters, idempotency keys and delivery counts live."""
        state = self._state
        if state is None:
            with self._lock:
                if self._state is None:
                    url = self._redis_url
                    if url is None:
                        info = self._broker()
                        if not info.redis:
                            raise ConfigurationError(
                                f"the Celery broker {info.safe_url} is not Redis: pass "
                                "CeleryBackgroundBackend(..., redis_url='redis://...') for "
                                "results and dead letters"
                            )
                        url = info.url
                    self._state = RedisState(
                        url, prefix=self._key_prefix, result_ttl=self._result_ttl
                    )
                state = self._state
        return state

    def _broker(self) -> _BrokerInfo:
        info = self._broker_info
        if info is None:
            info = self._broker_info = _BrokerInfo.of(self.celery_app)
        return info

    def _redis(self) -> redis.Redis:
        """The broker's sync Redis client (fork-safe: a child process makes its own)."""
        client = self._client
        pid = os.getpid()
        if client is None or self._client_pid != pid:
            import redis

            info = self._broker()
            with self._lock:
                if self._client is None or self._client_pid != pid:
                    self._client = redis.Redis.from_url(
                        info.url,
                        socket_connect_timeout=info.connect_timeout,
                        socket_timeout=info.socket_timeout,
                    )
                    self._client_pid = pid
                client = self._client
        assert client is not None
        return client

    # -- lifecycle -----------------------------------------------------------------------
    async def shutdown(self) -> None:
        """Wait up to ``shutdown_timeout`` for enqueues in flight, then release resources."""
        await asyncio.to_thread(self.shutdown_sync)

    def shutdown_sync(self, timeout: float | None = None) -> None:
        """Blocking form of :meth:`shutdown`, for scripts and tests."""
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.stop(self.shutdown_timeout if timeout is None else timeout)
        if self._subscribed:
            registry.unsubscribe(self._register_task)
            self._subscribed = False
        with self._lock:
            client, self._client = self._client, None
            state, self._state = self._state, None
        if client is not None:
            client.close()
        if state is not None:
            state.close()
        self._stop_portal()

    # -- producing -----------------------------------------------------------------------
    def _origin_name(self) -> str:
        pid = os.getpid()
        if self._origin_pid != pid:
            self._origin = f"gen{pid}@{socket.gethostname()}"
            self._origin_pid = pid
        return self._origin

    def _frame(
        self, message: Message, delay: float | None, task_name: str | None = None
    ) -> tuple[str, bytes]:
        """The Redis list and the kombu frame (Celery protocol 2) that carry ``message``."""
        env = message.envelope
        data = message.data.decode("utf-8", "replace")
        name = task_name or env.task_name
        eta = None
        if delay is not None and delay > 0:
            eta = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=delay)).isoformat()
        soft = hard = None
        spec = registry._tasks.get(name)
        if spec is not None and spec.timeout:
            soft = spec.timeout
            hard = soft + self.time_limit_grace
        if env.serializer == "json":
            argsrepr, kwargsrepr = repr(list(env.args))[:512], repr(env.kwargs)[:512]
        else:
            argsrepr, kwargsrepr = "<pickled>", "<pickled>"
        headers = {
            "lang": "py",
            "task": name,
            "id": env.task_id,
            "shadow": None,
            "eta": eta,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": env.attempt - 1,
            "timelimit": [hard, soft],
            "root_id": env.task_id,
            "parent_id": env.parent_id,
            "argsrepr": argsrepr,
            "kwargsrepr": kwargsrepr,
            "origin": self._origin_name(),
            "ignore_result": True,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        }
        body = base64.b64encode(orjson.dumps([[data], {}, _EMBED])).decode("ascii")
        queue = env.queue
        frame = {
            "body": body,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                "correlation_id": env.task_id,
                "reply_to": "",
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": new_task_id(),
            },
        }
        return self._broker().prefix + queue, orjson.dumps(frame)

    def _enqueue_error(self, message: Message, exc: BaseException) -> EnqueueError:
        return EnqueueError(
            f"could not enqueue {message.task_name} {message.task_id} on the Celery broker "
            f"{self._broker().safe_url}: {type(exc).__name__}: {exc}. Is the broker running?",
            cause=exc,
            task_id=message.task_id,
            task_name=message.task_name,
        )

    def _push_sync(self, message: Message, delay: float | None) -> None:
        info = self._broker()
        try:
            if info.redis:
                key, frame = self._frame(message, delay)
                self._redis().lpush(key, frame)
            else:
                self._send_task(message, delay)
        except PacificPyError:
            raise
        except Exception as exc:
            raise self._enqueue_error(message, exc) from exc

    def _send_task(self, message: Message, delay: float | None, name: str | None = None) -> None:
        """Publish through kombu (non-Redis brokers), failing fast instead of retrying."""
        env = message.envelope
        spec = registry._tasks.get(name or env.task_name)
        soft = spec.timeout if spec is not None else None
        self.celery_app.send_task(
            name or env.task_name,
            args=[message.data.decode("utf-8", "replace")],
            task_id=env.task_id,
            queue=env.queue,
            countdown=delay if delay and delay > 0 else None,
            retry=False,
            ignore_result=True,
            soft_time_limit=soft,
            time_limit=soft + self.time_limit_grace if soft else None,
        )

    def _claim(self, env: TaskEnvelope) -> bool:
        """Take the idempotency key of a first attempt; False if another task holds it."""
        assert env.idempotency_key is not None
        return self.state.claim(
            env.task_name, env.idempotency_key, env.task_id, self.idempotency_ttl
        )

    def enqueue_sync(self, message: Message, *, delay: float | None = None) -> None:
        """Publish ``message`` now, blocking (one Redis round trip).

        Raises:
            EnqueueError: the broker did not take it.
        """
        env = message.envelope
        if env.idempotency_key is not None and env.attempt == 1:
            try:
                claimed = self._claim(env)
            except Exception as exc:
                raise self._enqueue_error(message, exc) from exc
            if not claimed:
                return
            try:
                self._push_sync(message, delay)
            except BaseException:
                self._release_quietly(env)
                raise
            return
        self._push_sync(message, delay)

    def _release_quietly(self, env: TaskEnvelope) -> None:
        try:
            assert env.idempotency_key is not None
            self.state.release(env.task_name, env.idempotency_key)
        except Exception:
            logger.exception("could not release idempotency key of task %s", env.task_id)

    async def enqueue(self, message: Message, *, delay: float | None = None) -> None:
        """Publish ``message`` without blocking the event loop.

        Raises:
            EnqueueError: the broker did not take it.
        """
        env = message.envelope
        if (env.idempotency_key is not None and env.attempt == 1) or not self._broker().redis:
            await asyncio.to_thread(self.enqueue_sync, message, delay=delay)
            return
        await asyncio.wrap_future(self._publish(message, delay))

    def _publish(self, message: Message, delay: float | None) -> cf.Future[None]:
        key, frame = self._frame(message, delay)
        publisher = self._publisher
        if publisher is None or not publisher.usable():
            with self._lock:
                publisher = self._publisher
                if publisher is None or not publisher.usable():
                    publisher = self._publisher = _Publisher(self)
        return publisher.put(key, frame, message)

    def submit(self, message: Message, delay: float | None) -> Any:
        """Start the enqueue now: at once without a loop, through the publisher within one."""
        env = message.envelope
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return super().submit(message, delay)
        if (env.idempotency_key is not None and env.attempt == 1) or not self._broker().redis:
            return super().submit(message, delay)
        from pacificpy.background.task import TaskHandle

        fut = asyncio.wrap_future(self._publish(message, delay), loop=loop)
        handle: TaskHandle[Any] = TaskHandle(message.task_id, message.task_name, self, pending=fut)
        self._inflight.add(fut)
        fut.add_done_callback(lambda f: self._enqueue_done(f, message))
        return handle

    def submit_raw(self, data: bytes, *, queue: str = "default") -> None:
        """Publish raw bytes as a message, unchecked: for tests of bad messages.

        The Celery task name is the one the bytes name (or ``pacificpy.unknown``).
        """
        task_id, name = _codec.peek(data)
        env = TaskEnvelope(task_id=task_id or new_task_id(), task_name=name or "?", queue=queue)
        message = Message(env, data)
        celery_name = name or "pacificpy.unknown"
        if self._broker().redis:
            key, frame = self._frame(message, None, task_name=celery_name)
            self._redis().lpush(key, frame)
        else:
            self._send_task(message, None, name=celery_name)

    # -- the worker side -----------------------------------------------------------------
    def deliver(self, data: str, *, redelivered: bool = False) -> None:
        """Run one delivered message in this (worker) process and carry out the decision.

        ``redelivered`` (set by the broker when a message comes back unacknowledged)
        feeds the poison guard: past ``max_deliveries`` the message is a dead letter.
        """
        from celery.exceptions import Reject, SoftTimeLimitExceeded

        prep = execution.prepare(data, self)
        counted: tuple[str, int] | None = None
        if not isinstance(prep, Decision) and redelivered:
            env = prep[0]
            counted = (env.task_id, env.attempt)
            deliveries = self.state.delivered(env.task_id, env.attempt) + 1
            if deliveries > self.max_deliveries:
                prep = execution.reject(
                    data,
                    MessageRejected(
                        f"delivered {deliveries} times without finishing (max_deliveries="
                        f"{self.max_deliveries}): its worker died each time, so it is poison"
                    ),
                    reason="poison",
                    envelope=env,
                )
        if isinstance(prep, Decision):
            decision = prep
        else:
            decision = execution.execute_sync(
                data, self, timeout_errors=(SoftTimeLimitExceeded,), prepared=prep
            )
        try:
            try:
                self.carry_out(decision, data, counted)
            except SoftTimeLimitExceeded:
                # The soft limit fired while the outcome was being stored; it fires once.
                self.carry_out(decision, data, counted)
        except Exception as exc:
            logger.exception(
                "could not record the end of task %s; the message goes back to the queue",
                decision.task_id,
            )
            raise Reject(exc, requeue=True) from exc

    def carry_out(
        self, decision: Decision, data: str | bytes, counted: tuple[str, int] | None = None
    ) -> None:
        """Do what ``decision`` says: store, re-publish the next attempt, keep the letter."""
        env = decision.envelope
        if decision.kind == "retry":
            nxt = decision.next_envelope
            assert nxt is not None
            raw = _codec.encode(nxt, signing_key=self.signing_key)
            self._push_sync(Message(nxt, raw), decision.delay)
            if counted is not None:
                self.state.settle(None, None, deliveries=counted)
            return
        letter = decision.dead_letter
        if letter is not None:
            if not letter.data:
                letter.data = data if isinstance(data, str) else data.decode("utf-8", "replace")
            self.state.dlq_add(letter)
        release = None
        if decision.kind != "completed" and env is not None and env.idempotency_key:
            release = (env.task_name, env.idempotency_key)
        self.state.settle(decision.task_id, decision.outcome, deliveries=counted, release=release)

    def ended_by_worker(self, data: str, exc: BaseException, *, timed_out: bool) -> None:
        """Record an attempt the worker process ended (hard time limit, or the process was
        lost without a requeue): a timeout or failure, retried or dead-lettered by policy."""
        prep = execution.prepare(data, self)
        if isinstance(prep, Decision):
            self.carry_out(prep, data)
            return
        env, spec = prep
        error: BaseException = execution.timeout_error(spec) if timed_out else exc
        started = time.perf_counter() - (spec.timeout or 0.0)
        decision = execution.conclude(env, spec, started, exc=error, data=data)
        self.carry_out(decision, data, (env.task_id, env.attempt))

    def unknown_task(self, data: str, name: str | None) -> None:
        """A message Celery could not route to a task: a dead letter, never a crash."""
        prep = execution.prepare(data, self)
        if not isinstance(prep, Decision):
            env = prep[0]
            prep = execution.reject(
                data,
                TaskNotFound(name or env.task_name),
                reason="unknown_task",
                envelope=env,
            )
        self.carry_out(prep, data)

    # -- results -------------------------------------------------------------------------
    async def wait_result(self, task_id: str, timeout: float | None = None) -> Outcome:
        """Poll the stored outcome (5 ms at first, backing off to 100 ms)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.005
        while True:
            outcome = await asyncio.to_thread(self.state.result_get, task_id)
            if outcome is not None:
                return outcome
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise TimeoutError(f"task {task_id} did not finish within {timeout}s")
            await asyncio.sleep(pause if deadline is None else min(pause, deadline - now))
            pause = min(pause * 1.5, 0.1)

    def wait_result_sync(self, task_id: str, timeout: float | None = None) -> Outcome:
        """Blocking form of :meth:`wait_result`."""
        return self.state.wait_result_sync(task_id, timeout)

    async def get_status(self, task_id: str) -> TaskStatus | None:
        """The stored outcome's status, else what the monitor knows."""
        return await asyncio.to_thread(self.get_status_sync, task_id)

    def get_status_sync(self, task_id: str) -> TaskStatus | None:
        """Blocking form of :meth:`get_status`."""
        outcome = self.state.result_get(task_id)
        if outcome is not None:
            return outcome.status
        rec = get_task_monitor().get(task_id)
        return rec.status if rec is not None else None

    # -- queues and dead letters ---------------------------------------------------------
    async def queue_length(self, queue: str = "default") -> int:
        """Messages waiting in ``queue`` on the broker (``LLEN``; ETA-held ones excluded)."""
        return await asyncio.to_thread(self.queue_length_sync, queue)

    def queue_length_sync(self, queue: str = "default") -> int:
        """Blocking form of :meth:`queue_length`."""
        info = self._broker()
        if not info.redis:
            with self.celery_app.connection_for_read() as conn:
                return int(conn.default_channel.queue_declare(queue, passive=True).message_count)
        pipe = self._redis().pipeline(transaction=False)
        for pri in info.priority_steps:
            suffix = f"{_PRIORITY_SEP}{pri}" if pri else ""
            pipe.llen(f"{info.prefix}{queue}{suffix}")
        return int(sum(pipe.execute()))

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return await asyncio.to_thread(self.dead_letters_sync, limit)

    def dead_letters_sync(self, limit: int = 100) -> list[DeadLetter]:
        return self.state.dlq_list(limit)

    async def requeue_dead_letter(self, letter_id: str) -> str:
        return await asyncio.to_thread(self.requeue_dead_letter_sync, letter_id)

    def requeue_dead_letter_sync(self, letter_id: str) -> str:
        letter = self.state.dlq_pop(letter_id)
        if letter is None:
            raise KeyError(f"no dead letter with id {letter_id!r}")
        message = execution.requeue_message(letter, self)
        self.state.result_clear(message.task_id)
        try:
            if letter.requeueable:
                self.enqueue_sync(message)
            else:
                self.submit_raw(message.data, queue=message.queue)
        except BaseException:
            self.state.dlq_add(letter)  # not lost: back where it was
            raise
        return message.task_id

    async def purge_dead_letters(self) -> int:
        return await asyncio.to_thread(self.purge_dead_letters_sync)

    def purge_dead_letters_sync(self) -> int:
        return self.state.dlq_purge()

    # -- the worker command --------------------------------------------------------------
    def run_worker(
        self,
        *,
        workers: int | None = None,
        queues: list[str] | None = None,
        loglevel: str = "INFO",
    ) -> int:
        """Run the Celery worker in this process (``pacificpy worker myapp``).

        Args:
            workers: worker processes (Celery's ``--concurrency``); Celery's default if None.
            queues: queues to consume (``-Q``); by default every queue a task declares.
            loglevel: Celery's ``--loglevel``.

        Returns:
            The worker's exit code.
        """
        argv = ["worker", f"--loglevel={loglevel}"]
        if workers:
            argv.append(f"--concurrency={workers}")
        if queues:
            argv.append("--queues=" + ",".join(queues))
        try:
            code = self.celery_app.worker_main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return int(code or 0)

    def task_queues(self) -> list[str]:
        """Every queue a registered task declares (what a worker consumes by default)."""
        return sorted({spec.queue for spec in registry.all_specs()} | {"default"})


class _BrokerInfo:
    """What the producer needs to know about the broker, read once from the Celery conf."""

    def __init__(
        self,
        url: str,
        *,
        redis: bool,
        prefix: str,
        priority_steps: tuple[int, ...],
        connect_timeout: float,
        socket_timeout: float,
    ) -> None:
        self.url = url
        self.redis = redis
        self.prefix = prefix
        self.priority_steps = priority_steps
        self.connect_timeout = connect_timeout
        self.socket_timeout = socket_timeout

    @property
    def safe_url(self) -> str:
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"

    @classmethod
    def of(cls, app: Celery) -> _BrokerInfo:
        conf = app.conf
        url = conf.broker_write_url or conf.broker_url or "amqp://guest@localhost//"
        if isinstance(url, (list, tuple)):
            url = url[0]
        url = str(url).split(";")[0].strip()
        options = dict(conf.broker_transport_options or {})
        scheme = url.partition("://")[0].lower()
        return cls(
            url,
            redis=scheme in ("redis", "rediss", "unix"),
            prefix=str(options.get("global_keyprefix", "")),
            priority_steps=tuple(options.get("priority_steps", _DEFAULT_PRIORITY_STEPS)),
            connect_timeout=float(
                options.get("socket_connect_timeout") or conf.broker_connection_timeout or 4.0
            ),
            socket_timeout=float(options.get("socket_timeout") or 10.0),
        )


_STOP = object()


class _Publisher:
    """One thread that pushes messages enqueued from event loops, pipelining what waits.

    A caller gets a ``concurrent.futures.Future`` resolved when Redis took its message (or
    failed with ``EnqueueError``); the loop never blocks on the socket.
    """

    def __init__(self, backend: CeleryBackgroundBackend) -> None:
        self._backend = backend
        self._pid = os.getpid()
        self._queue: queue_module.SimpleQueue[Any] = queue_module.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name="pacificpy-celery-publisher", daemon=True
        )
        self._thread.start()

    def usable(self) -> bool:
        return self._pid == os.getpid() and self._thread.is_alive()

    def put(self, key: str, frame: bytes, message: Message) -> cf.Future[None]:
        fut: cf.Future[None] = cf.Future()
        self._queue.put((key, frame, message, fut))
        return fut

    def stop(self, timeout: float) -> None:
        if self._pid != os.getpid():
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            stop = item is _STOP
            batch = [] if stop else [item]
            while len(batch) < _BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue_module.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    continue
                batch.append(nxt)
            if batch:
                self._push(batch)
            if stop:
                return

    def _push(self, batch: list[tuple[str, bytes, Message, cf.Future[None]]]) -> None:
        try:
            pipe = self._backend._redis().pipeline(transaction=False)
            for key, frame, _, _ in batch:
                pipe.lpush(key, frame)
            pipe.execute()
        except Exception as exc:
            for _, _, message, fut in batch:
                if fut.set_running_or_notify_cancel():
                    fut.set_exception(self._backend._enqueue_error(message, exc))
            return
        for _, _, _, fut in batch:
            if fut.set_running_or_notify_cancel():
                fut.set_result(None)


# -- Celery configuration ------------------------------------------------------------------
def _user_set(conf: Any, key: str) -> bool:
    maps = getattr(conf, "maps", None)
    if not maps:
        return False
    # Settings is a ChainMap: [changes, config source(s)..., Celery's defaults].
    return any(key in m for m in maps[:-1])


def _apply_defaults(app: Celery) -> None:
    """Apply :data:`AT_LEAST_ONCE_DEFAULTS` once the app's configuration is loaded."""

    def apply(conf: Any) -> None:
        for key, value in AT_LEAST_ONCE_DEFAULTS.items():
            if not _user_set(conf, key):
                conf[key] = value

    if app.configured:
        apply(app.conf)
        return

    def on_configured(sender: Any = None, source: Any = None, **_: Any) -> None:
        apply(source if source is not None else app.conf)

    app.on_after_configure.connect(on_configured, weak=False)


_signals_connected = False


def _connect_worker_signals() -> None:
    """Worker-side hooks (no-ops in producers): default queues and unknown tasks."""
    global _signals_connected
    if _signals_connected:
        return
    from celery import signals

    signals.celeryd_after_setup.connect(_on_worker_setup, weak=False)
    signals.task_unknown.connect(_on_unknown_task, weak=False)
    _signals_connected = True


def _on_worker_setup(sender: Any = None, instance: Any = None, **_: Any) -> None:
    app = getattr(instance, "app", None)
    backend = backend_for(app)
    if backend is None:
        return
    queues = app.amqp.queues
    if queues.consume_from is not queues:
        return  # -Q given: consume exactly what the user asked for
    for name in backend.task_queues():
        if name not in queues:
            queues.add(name)
    logger.info("PacificPy: consuming queues %s", ", ".join(sorted(queues)))


def _on_unknown_task(
    sender: Any = None, message: Any = None, name: str | None = None, **_: Any
) -> None:
    backend = backend_for(getattr(sender, "app", None))
    if backend is None or message is None:
        return
    try:
        payload = message.decode()
        args = payload[0] if isinstance(payload, (list, tuple)) and payload else None
        if not (isinstance(args, (list, tuple)) and len(args) == 1 and isinstance(args[0], str)):
            return  # not a PacificPy message: Celery's own handling stands
        backend.unknown_task(args[0], name)
    except Exception:
        logger.exception("could not dead-letter the unknown task %s", name)


# -- `celery -A myapp worker` with `app = PacificPy()` in myapp ------------------------------
_CLI_APPS: dict[str, Celery] = {}


class _CeleryCLIModule(ModuleType):
    """Module type given to ``myapp`` under ``celery -A myapp``: when Celery's ``find_app``
    reads ``myapp.app`` and finds something that is not a Celery app (the PacificPy app),
    it gets the Celery app of the configured backend instead. Nobody else is affected."""

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if name == "app" and not isinstance(value, Celery):
            caller = sys._getframe(1)
            if caller.f_code.co_name == "find_app" and caller.f_globals.get(
                "__name__", ""
            ).startswith("celery."):
                celery_app = _CLI_APPS.get(super().__getattribute__("__name__"))
                if celery_app is not None:
                    return celery_app
        return value


def _answer_celery_cli(celery_app: Celery) -> None:
    """Under ``celery -A module ...``, let Celery find ``celery_app`` in ``module``."""
    cli = sys.modules.get("celery.bin.celery")
    if cli is None:
        return
    try:
        import click

        ctx = click.get_current_context(silent=True)
    except Exception:  # pragma: no cover - click always comes with celery
        return
    if ctx is None:
        return
    root = ctx.find_root()
    if root.command is not getattr(cli, "celery", None):
        return
    name = root.params.get("app")
    if not isinstance(name, str) or ":" in name:
        return
    module = sys.modules.get(name)
    if module is None or type(module) not in (ModuleType, _CeleryCLIModule):
        return
    _CLI_APPS[name] = celery_app
    module.__class__ = _CeleryCLIModule
