"""The Celery backend: ``@background`` tasks run by a stock ``celery worker``.

Every PacificPy task is registered with the Celery app as a Celery task of the same name,
so ``celery -A myapp worker`` runs them. A Celery task's one argument is the PacificPy
message (the signed bytes of :mod:`pacificpy.background._codec`, as text).

Producing. With a Redis broker a message is pushed straight onto the queue's Redis list
(``LPUSH`` of the frame kombu's Redis transport writes): one round trip, no producer pool;
from an event loop through one publisher thread, so ``.delay()`` never blocks the loop.
With another broker (AMQP...) ``send_task`` is used, with publish retries off so a dead
broker fails fast.

State. Outcomes, dead letters, idempotency keys and the poison-guard counts live in Redis
(:class:`~pacificpy.background.backends.redis.state.RedisTaskState`): the broker's Redis by
default, or ``redis_url=``. ``handle.result()`` always reads the outcome PacificPy stored
there; Celery's result backend is not written for PacificPy tasks (``ignore_result``).

The pieces: ``_celery_publish`` (broker, frames, publisher thread), ``_celery_app``
(defaults, task registration, worker signals), ``_celery_worker`` (the task body and the
request class: running a delivery and carrying out its decision), ``_celery_cli``
(``celery -A myapp`` when ``myapp.app`` is the PacificPy app).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
from typing import Any, ClassVar

from celery import Celery

from pacificpy.background import _codec, registry
from pacificpy.background.backend import BackgroundBackend, monitor_in_memory
from pacificpy.background.backends import _celery_app
from pacificpy.background.backends._celery_amqp import AmqpPublisher
from pacificpy.background.backends._celery_app import AT_LEAST_ONCE_DEFAULTS, backend_for
from pacificpy.background.backends._celery_cli import answer_celery_cli
from pacificpy.background.backends._celery_publish import (
    PRIORITY_SEP,
    BrokerInfo,
    Publisher,
    celery_frame,
    frame_due,
    time_limits,
)
from pacificpy.background.backends._common import check_reachable
from pacificpy.background.backends.redis.clients import RedisClients
from pacificpy.background.backends.redis.state import RedisTaskState
from pacificpy.background.backends.state import TaskState
from pacificpy.background.task import Message, TaskEnvelope, TaskHandle, TaskSpec, new_task_id
from pacificpy.background.workers import Heartbeat, WorkerHealth
from pacificpy.errors import ConfigurationError, PacificPyError

__all__ = ["AT_LEAST_ONCE_DEFAULTS", "CeleryBackgroundBackend", "backend_for"]


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
        state: where that state lives instead of Redis, a
            :class:`~pacificpy.background.backends.state.TaskState` (e.g.
            :class:`~pacificpy.background.backends.postgres.PostgresTaskState`); not with
            ``redis_url``.
        key_prefix: prefix of those Redis keys.
        result_ttl: seconds outcomes are kept.
        time_limit_grace: seconds between a task's soft time limit (its ``timeout``) and
            Celery's hard limit, which kills the worker process.

    Unless set on the Celery app, ``task_acks_late=True``, ``task_reject_on_worker_lost=True``
    and ``worker_prefetch_multiplier=1`` are applied (at-least-once delivery), and the
    broker's ``visibility_timeout`` (how long a message of a dead worker waits before it is
    delivered again) is 300 s, or longer to cover every declared task timeout and retry
    delay (:func:`~._celery_app.visibility_timeout_for`).

    A broker that is not Redis (RabbitMQ...) needs ``redis_url=`` or ``state=``: without
    one the backend is refused when configured (``configure_background_tasks``), at app
    startup and at the first ``.delay()``, before any task is accepted.

    Raises:
        ConfigurationError: ``celery_app`` is not a Celery app, or both ``redis_url`` and
            ``state`` are given.
    """

    kind: ClassVar[str] = "celery"
    primary: ClassVar[str] = "sync"

    def __init__(
        self,
        celery_app: Celery,
        *,
        allow_pickle: bool = False,
        shutdown_timeout: float = 30.0,
        max_deliveries: int = 5,
        redis_url: str | None = None,
        state: TaskState | None = None,
        key_prefix: str = "pacificpy",
        result_ttl: float = 86_400.0,
        time_limit_grace: float = 5.0,
    ) -> None:
        if not isinstance(celery_app, Celery):
            raise ConfigurationError(
                f"CeleryBackgroundBackend needs a celery.Celery app, not {type(celery_app)!r}"
            )
        if state is not None and redis_url is not None:
            raise ConfigurationError(
                "CeleryBackgroundBackend takes redis_url= or state=, not both: the state "
                "(outcomes, dead letters, idempotency keys) lives in one place"
            )
        if state is not None and not isinstance(state, TaskState):
            raise ConfigurationError(
                f"CeleryBackgroundBackend(state=...) needs a TaskState, not {type(state)!r}"
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
        self._state: TaskState | None = state
        self._given_state = state
        self._broker_info: BrokerInfo | None = None
        self._clients: RedisClients | None = None
        self._lock = threading.Lock()
        self._publisher: Publisher | None = None
        self._amqp_publisher: AmqpPublisher | None = None
        #: In a worker process: the checks ``pacificpy worker --health-port`` answers, the
        #: heartbeat in the worker registry, and whether the consumer consumes.
        self.worker_health: WorkerHealth | None = None
        self.worker_beat: Heartbeat | None = None
        self.consuming = False
        _celery_app.apply_defaults(celery_app, time_limit_grace)
        # The tasks declared so far go on the app now; the process-wide parts (registry
        # listener, worker signals, app -> backend link) wait for attach().
        for spec in registry.all_specs():
            self._register_task(spec)

    def __repr__(self) -> str:
        return f"<CeleryBackgroundBackend app={self.celery_app.main!r}>"

    # -- configuration -------------------------------------------------------------------
    def check_configuration(self) -> None:
        """Refuse a setup that could accept tasks and not keep their state.

        Called by ``configure_background_tasks`` (before the backend is installed), at app
        startup and at the first enqueue. Reads the configuration only: nothing connects.

        Raises:
            ConfigurationError: the broker is not Redis, and neither ``redis_url=`` nor
                ``state=`` says where outcomes and dead letters live.
        """
        if self._state is not None or self._redis_url is not None:
            return
        info = self._broker()
        if not info.redis:
            raise ConfigurationError(
                f"the Celery broker {info.safe_url} is not Redis, so PacificPy has nowhere "
                "to keep results, dead letters and idempotency keys: pass "
                "CeleryBackgroundBackend(..., redis_url='redis://...') or "
                "CeleryBackgroundBackend(..., state=PostgresTaskState('postgresql://...'))"
            )

    def attach(self) -> None:
        """Called by ``configure_background_tasks``: serve this Celery app and its CLI.

        Raises:
            ConfigurationError: see :meth:`check_configuration`.
        """
        self.check_configuration()
        _celery_app.attach(self.celery_app, self)
        registry.subscribe(self._register_task)
        _celery_app.connect_worker_signals()
        answer_celery_cli(self.celery_app)

    def _register_task(self, spec: TaskSpec) -> None:
        """Register ``spec`` with Celery under its own name (the worker runs it by name)."""
        _celery_app.register_task(self.celery_app, spec, time_limits(spec, self.time_limit_grace))

    def _limits(self, task_name: str) -> tuple[float | None, float | None]:
        return time_limits(registry._tasks.get(task_name), self.time_limit_grace)

    @property
    def state(self) -> TaskState:
        """Where outcomes, dead letters, idempotency keys and delivery counts live.

        Raises:
            ConfigurationError: see :meth:`check_configuration`.
        """
        state = self._state
        if state is None:
            self.check_configuration()
            with self._lock:
                if self._state is None:
                    url = self._redis_url or self._broker().url
                    self._state = RedisTaskState(
                        url, prefix=self._key_prefix, result_ttl=self._result_ttl
                    )
                state = self._state
        return state

    def _broker(self) -> BrokerInfo:
        info = self._broker_info
        if info is None:
            info = self._broker_info = BrokerInfo.of(self.celery_app)
        return info

    def _redis(self) -> Any:
        """The broker's sync Redis client (a forked child makes its own)."""
        clients = self._clients
        if clients is None:
            info = self._broker()
            with self._lock:
                if self._clients is None:
                    self._clients = RedisClients(info.url, factory=info.client)
                clients = self._clients
        return clients.sync

    # -- lifecycle -----------------------------------------------------------------------
    async def startup(self) -> None:
        """At app startup, refuse a state-less setup (:meth:`check_configuration`), then
        check that the broker answers; if it does not, log a WARNING and go on."""
        self.check_configuration()
        info = self._broker()
        await check_reachable("Celery", info.safe_url, lambda: asyncio.to_thread(self._ping))

    def _ping(self) -> None:
        """One round trip to the broker (PING on Redis; a connection on others)."""
        if self._broker().redis:
            self._redis().ping()
            return
        with self.celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)

    def ping_sync(self) -> None:
        """One round trip to the broker, then one to the state (health checks)."""
        self._ping()
        self.state.ping()

    async def shutdown(self) -> None:
        """Wait up to ``shutdown_timeout`` for enqueues in flight, then release resources."""
        await asyncio.to_thread(self.shutdown_sync)

    def shutdown_sync(self, timeout: float | None = None) -> None:
        """Blocking form of :meth:`shutdown`, for scripts and tests."""
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.stop(self.shutdown_timeout if timeout is None else timeout)
        registry.unsubscribe(self._register_task)
        with self._lock:
            clients, self._clients = self._clients, None
            state, self._state = self._state, self._given_state
        if clients is not None:
            clients.close()
        if state is not None:
            state.close()
        self._stop_portal()

    # -- producing -----------------------------------------------------------------------
    def _frame(
        self, message: Message, delay: float | None, task_name: str | None = None
    ) -> tuple[str, bytes]:
        """The Redis list and the kombu frame (Celery protocol 2) that carry ``message``."""
        name = task_name or message.task_name
        return celery_frame(
            message,
            delay,
            task_name=name,
            key_prefix=self._broker().prefix,
            limits=self._limits(name),
            priority_lists=self._broker().priority_lists,
        )

    enqueue_hint = "Is the broker running?"

    def enqueue_where(self) -> str:
        return f"on the Celery broker {self._broker().safe_url}"

    def _push(self, message: Message, delay: float | None, name: str | None = None) -> None:
        """One blocking publish: ``LPUSH`` of the frame on Redis, a confirmed publish on
        RabbitMQ, else ``send_task``."""
        info = self._broker()
        if info.redis:
            key, frame = self._frame(message, delay, task_name=name)
            self._redis().lpush(key, frame)
        elif info.amqp:
            task_name = name or message.task_name
            self._amqp().publish(
                message,
                delay,
                task_name=task_name,
                limits=self._limits(task_name),
                priority=message.envelope.priority or None,  # for x-max-priority queues
            )
        else:
            self._send_task(message, delay, name)

    def _amqp(self) -> AmqpPublisher:
        """The RabbitMQ publisher (producer pool with confirms, delay queues)."""
        publisher = self._amqp_publisher
        if publisher is None:
            with self._lock:
                if self._amqp_publisher is None:
                    timeout = self._broker().socket_timeout
                    self._amqp_publisher = AmqpPublisher(self.celery_app, timeout)
                publisher = self._amqp_publisher
        return publisher

    def publish_now(self, message: Message, delay: float | None) -> None:
        """Publish ``message`` (no idempotency claim), blocking: a worker's next attempt.

        Raises:
            EnqueueError: the broker did not take it.
        """
        try:
            self._push(message, delay)
        except PacificPyError:
            raise
        except Exception as exc:
            raise self.enqueue_error(message, exc) from exc

    def _send_task(self, message: Message, delay: float | None, name: str | None = None) -> None:
        """Publish through kombu (non-Redis brokers), failing fast instead of retrying."""
        env = message.envelope
        soft, hard = self._limits(name or env.task_name)
        self.celery_app.send_task(
            name or env.task_name,
            args=[message.data.decode("utf-8", "replace")],
            task_id=env.task_id,
            queue=env.queue,
            countdown=delay if delay and delay > 0 else None,
            retry=False,
            ignore_result=True,
            soft_time_limit=soft,
            time_limit=hard,
            priority=env.priority or None,  # AMQP: higher first (x-max-priority queues)
        )

    def enqueue_sync(self, message: Message, *, delay: float | None = None) -> None:
        """Publish ``message`` now, blocking (one Redis round trip; two with a key to claim).

        Raises:
            ConfigurationError: see :meth:`check_configuration`.
            EnqueueError: the broker did not take it.
        """
        if not self._broker().redis:
            self.check_configuration()
        self.publish_claimed(message, lambda: self.publish_now(message, delay))

    def _blocking_only(self, env: TaskEnvelope) -> bool:
        """True if ``env`` cannot go through the publisher thread: an idempotency key to
        claim first, or a broker that is not Redis."""
        return self.key_to_claim(env) is not None or not self._broker().redis

    async def enqueue(self, message: Message, *, delay: float | None = None) -> None:
        """Publish ``message`` without blocking the event loop.

        Raises:
            EnqueueError: the broker did not take it.
        """
        if self._blocking_only(message.envelope):
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
                    publisher = self._publisher = Publisher(self._redis, self.enqueue_error)
        return publisher.put(key, frame, message)

    def submit(self, message: Message, delay: float | None) -> Any:
        """Start the enqueue now: at once without a loop, through the publisher within one."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return super().submit(message, delay)
        if self._blocking_only(message.envelope):
            return super().submit(message, delay)
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
        self._push(message, None, name or "pacificpy.unknown")

    # -- cancellation --------------------------------------------------------------------
    def terminate(self, task_id: str) -> None:
        """Kill the pool process running ``task_id`` (``cancel(terminate=True)``): Celery's
        ``revoke(terminate=True, signal="SIGKILL")``, broadcast to the workers. The pool
        starts a new process; the message, if it comes back, meets the tombstone."""
        self.celery_app.control.revoke(task_id, terminate=True, signal="SIGKILL")

    # -- status ------------------------------------------------------------------------
    def queued_hint(self, task_id: str) -> str:
        """Celery keeps no "running" mark of its own: before the outcome, the status is the
        monitor's, and an in-memory monitor never sees a worker start the task."""
        hint = super().queued_hint(task_id)
        if monitor_in_memory():
            hint += (
                "; or it is running: this process's task monitor is in memory and cannot "
                "see a worker start it (configure_task_monitor(redis_url=...) shares it)"
            )
        return hint

    # -- queues ----------------------------------------------------------------------------
    def queue_length_sync(self, queue: str = "default") -> int:
        """Messages waiting in ``queue`` on the broker: ``LLEN`` on Redis (ETA-held ones
        excluded), a passive declare on RabbitMQ (delayed ones excluded)."""
        info = self._broker()
        if info.amqp:
            return self._amqp().queue_length(queue)
        if not info.redis:
            with self.celery_app.connection_for_read() as conn:
                return int(conn.default_channel.queue_declare(queue, passive=True).message_count)
        pipe = self._redis().pipeline(transaction=False)
        for pri in info.priority_steps:
            suffix = f"{PRIORITY_SEP}{pri}" if pri else ""
            pipe.llen(f"{info.prefix}{queue}{suffix}")
        return int(sum(pipe.execute()))

    def oldest_waiting_sync(self, queue: str = "default") -> float | None:
        """When the oldest message of ``queue`` on a Redis broker became due: the tail of
        each priority list (``BRPOP`` takes from there), read from the enqueue time the
        PacificPy message carries, or its ETA if later.

        Raises:
            NotImplementedError: the broker is not Redis (AMQP gives no oldest message
                without taking it).
        """
        info = self._broker()
        if not info.redis:
            raise NotImplementedError(f"the Celery broker {info.safe_url} is not Redis")
        pipe = self._redis().pipeline(transaction=False)
        for pri in info.priority_steps:
            suffix = f"{PRIORITY_SEP}{pri}" if pri else ""
            pipe.lindex(f"{info.prefix}{queue}{suffix}", -1)
        due = [frame_due(frame) for frame in pipe.execute() if frame is not None]
        known = [d for d in due if d is not None]
        return min(known) if known else None

    # -- the worker command --------------------------------------------------------------
    def run_worker(
        self,
        *,
        workers: int | None = None,
        queues: list[str] | None = None,
        loglevel: str = "INFO",
        health: WorkerHealth | None = None,
    ) -> int:
        """Run the Celery worker in this process (``pacificpy worker myapp``).

        Args:
            workers: worker processes (Celery's ``--concurrency``); Celery's default if None.
            queues: queues to consume (``-Q``); by default every queue a task declares.
            loglevel: Celery's ``--loglevel``.
            health: gets the worker's checks (consuming; the backend reachable).

        Returns:
            The worker's exit code.
        """
        self.worker_health = health
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
        return _celery_app.task_queues()
