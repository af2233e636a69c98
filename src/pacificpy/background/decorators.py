"""``@background`` and ``configure_background_tasks``.

A decorated function keeps working as a plain function; ``.delay()`` and
``.apply_async()`` check the arguments at the call site, encode them and hand the
message to whichever backend is configured at that moment.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar, overload

from typing_extensions import ParamSpec

from pacificpy.background import _codec, flow, registry, schedules
from pacificpy.background.backend import BackgroundBackend
from pacificpy.background.config import (
    get_backend,
    reset_background_tasks,
    swap_backend,
    trace_injectors,
)
from pacificpy.background.monitor import get_task_monitor
from pacificpy.background.retry import RetryPolicy
from pacificpy.background.task import (
    Message,
    TaskEnvelope,
    TaskHandle,
    TaskSpec,
    _current,
    new_task_id,
)
from pacificpy.errors import ConfigurationError, TaskSerializationError
from pacificpy.types import TaskStatus

__all__ = [
    "BackgroundTask",
    "background",
    "configure_background_tasks",
    "get_backend",
    "reset_background_tasks",
]

logger = logging.getLogger("pacificpy.background")

P = ParamSpec("P")
T = TypeVar("T")


class BackgroundTask(Generic[P, T]):
    """A function declared with ``@background``.

    Calling it runs the function inline; ``.delay()`` / ``.apply_async()`` enqueue it.
    """

    def __init__(self, fn: Callable[P, Any], spec: TaskSpec) -> None:
        self.fn = fn
        self.spec = spec
        functools.update_wrapper(self, fn)

    @property
    def name(self) -> str:
        """The task's registered name (``module.qualname`` unless given)."""
        return self.spec.name

    def __repr__(self) -> str:
        return f"<background task {self.spec.name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        return self.fn(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[T]:
        """Enqueue a run with these arguments now; return its handle.

        Raises:
            TaskArgumentError: the arguments do not bind to the function.
            TaskSerializationError: an argument JSON would not deliver as the type its
                parameter declares, or cannot carry at all (named by its parameter).
            QueueFull: the local executor's queue is full.
            EnqueueError: no running loop here and the backend refused the task.
        """
        return self._send(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: dt.datetime | None = None,
        task_id: str | None = None,
        idempotency_key: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
    ) -> TaskHandle[T]:
        """Like :meth:`delay`, with options.

        Args:
            args: positional arguments.
            kwargs: keyword arguments.
            countdown: start no sooner than this many seconds from now.
            eta: start no sooner than this time (naive datetimes are UTC).
            task_id: use this id instead of a random one.
            idempotency_key: while a task enqueued with this key (for this task) is queued,
                running or completed within the backend's TTL, enqueue nothing and return a
                handle to it.
            queue: the queue to use instead of the task's own.
            priority: 0 to 9 instead of the task's own; higher runs first within a queue.
        """
        if countdown is not None and eta is not None:
            raise ConfigurationError("pass countdown or eta, not both")
        delay = countdown
        if eta is not None:
            if eta.tzinfo is None:
                eta = eta.replace(tzinfo=dt.timezone.utc)
            delay = (eta - dt.datetime.now(dt.timezone.utc)).total_seconds()
        return self._send(
            tuple(args),
            dict(kwargs or {}),
            delay=delay,
            task_id=task_id,
            idempotency_key=idempotency_key,
            queue=queue,
            priority=flow.check_priority(priority) if priority is not None else None,
            options=("countdown" if countdown is not None else None,
                     "eta" if eta is not None else None,
                     "idempotency_key" if idempotency_key is not None else None,
                     "priority" if priority is not None else None),
        )  # fmt: skip

    def _send(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        delay: float | None = None,
        task_id: str | None = None,
        idempotency_key: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        options: tuple[str | None, ...] = (),
    ) -> TaskHandle[T]:
        spec = self.spec
        spec.check_args(args, kwargs)
        args, kwargs = spec.plan.to_wire(args, kwargs)
        backend = get_backend()
        if options:
            _check_options(backend, [o for o in options if o])
        if spec.serializer == "pickle" and not backend.allow_pickle:
            raise TaskSerializationError(
                f"task {spec.name} uses serializer='pickle' but the configured "
                f"{backend.kind} backend refuses pickled messages; build it with "
                "allow_pickle=True (only if every producer is trusted)",
                task_name=spec.name,
            )
        if task_id is None:
            task_id = (
                _idempotent_id(spec.name, idempotency_key) if idempotency_key else new_task_id()
            )
        parent = _current.get()
        trace = None
        if trace_injectors:
            trace = {}
            for inject in trace_injectors:
                trace.update(inject() or {})
        env = TaskEnvelope(
            task_id,
            spec.name,
            args,
            kwargs,
            queue or spec.queue,
            1,
            time.time(),
            parent.id if parent is not None else None,
            spec.serializer,
            idempotency_key,
            trace or None,
            spec.priority if priority is None else priority,
        )
        data = _codec.encode(
            env, signing_key=backend.signing_key, max_payload_bytes=backend.max_payload_bytes
        )
        monitor = get_task_monitor()
        try:
            if idempotency_key is None or not _held(monitor, task_id):
                monitor.task_queued(env)
        except Exception:
            logger.exception("task monitor failed on task_queued")
        try:
            return backend.submit(Message(env, data, trusted=True), delay)
        except Exception as exc:
            try:
                monitor.task_failed(env, f"{type(exc).__name__}: {exc}", None, None)
            except Exception:
                logger.exception("task monitor failed on task_failed")
            raise


def _held(monitor: Any, task_id: str) -> bool:
    # A duplicate idempotent call returns the first task's handle; it must not reset that
    # task's record to "queued". Only a task that ended in failure may be enqueued again.
    rec = monitor.get(task_id)
    return rec is not None and rec.status not in (
        TaskStatus.FAILED,
        TaskStatus.DEAD,
        TaskStatus.ABANDONED,
    )


def _idempotent_id(name: str, key: str) -> str:
    # The id is derived from the key, so a duplicate call returns a handle to the first
    # task at once, with no round trip, and every backend agrees on it.
    return "ik-" + hashlib.sha256(f"{name}\x00{key}".encode()).hexdigest()[:32]


def _check_options(backend: BackgroundBackend, used: list[str]) -> None:
    missing = [o for o in used if o not in backend.supported_options]
    if missing:
        raise ConfigurationError(
            f"the {backend.kind} backend does not support {', '.join(missing)}"
        )


class _TaskDecorator(Protocol):
    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, T]]) -> BackgroundTask[P, T]: ...
    @overload
    def __call__(self, fn: Callable[P, T]) -> BackgroundTask[P, T]: ...


@overload
def background(fn: Callable[P, Coroutine[Any, Any, T]]) -> BackgroundTask[P, T]: ...
@overload
def background(fn: Callable[P, T]) -> BackgroundTask[P, T]: ...
@overload
def background(
    fn: None = None,
    *,
    name: str | None = None,
    queue: str = "default",
    retries: int = 0,
    retry_backoff: float = 1.0,
    retry_backoff_max: float = 600.0,
    retry_jitter: bool = True,
    retry_on: tuple[type[BaseException], ...] | type[BaseException] = (Exception,),
    timeout: float | None = None,
    serializer: str = "json",
    concurrency: int | None = None,
    rate_limit: str | None = None,
    priority: int = 0,
    schedule: str | dt.timedelta | None = None,
    schedule_tz: str = "UTC",
    missed: str = "skip",
) -> _TaskDecorator: ...
def background(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    queue: str = "default",
    retries: int = 0,
    retry_backoff: float = 1.0,
    retry_backoff_max: float = 600.0,
    retry_jitter: bool = True,
    retry_on: tuple[type[BaseException], ...] | type[BaseException] = (Exception,),
    timeout: float | None = None,
    serializer: str = "json",
    concurrency: int | None = None,
    rate_limit: str | None = None,
    priority: int = 0,
    schedule: str | dt.timedelta | None = None,
    schedule_tz: str = "UTC",
    missed: str = "skip",
) -> Any:
    """Declare a background task, bare (``@background``) or with options.

    Args:
        name: registered name; ``module.qualname`` by default.
        queue: queue the task goes to unless ``apply_async(queue=...)`` says otherwise.
        retries: extra attempts after a failure matching ``retry_on``.
        retry_backoff: first retry delay in seconds, doubled per attempt.
        retry_backoff_max: upper bound of the retry delay.
        retry_jitter: draw each delay uniformly from ``[0, delay]`` ("full jitter").
        retry_on: exception types that earn a retry (``Retry`` always does).
        timeout: seconds an attempt may run; a timeout is a failed attempt.
        serializer: ``"json"`` (default) or ``"pickle"`` (opt-in, see the docs).
        concurrency: at most this many runs at once, across every worker process.
        rate_limit: at most this many starts per second, minute or hour (``"100/m"``),
            across every worker process.
        priority: 0 (default) to 9; higher runs first within a queue.
        schedule: run periodically: a cron expression (5 fields, or 6 with seconds first)
            or a ``datetime.timedelta``; each slot runs once across every process (see
            ``docs/schedules.md``). The task must take no required arguments.
        schedule_tz: the time zone a cron expression is read in (an IANA name).
        missed: after every process was down over some slots, ``"skip"`` them or run
            ``"once"`` for them.

    Raises:
        ConfigurationError: a different function already has this name, or an option is
            invalid.
    """
    if serializer not in _codec.SERIALIZERS:
        raise ConfigurationError(
            f"serializer must be one of {sorted(_codec.SERIALIZERS)}, not {serializer!r}"
        )
    if timeout is not None and timeout <= 0:
        raise ConfigurationError("timeout must be a positive number of seconds")
    if isinstance(retry_on, type):
        retry_on = (retry_on,)
    try:
        policy = RetryPolicy(retries, retry_backoff, retry_backoff_max, retry_jitter, retry_on)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    limits = flow.limits(concurrency, rate_limit)
    flow.check_priority(priority)
    planned = None
    if schedule is not None:
        planned = schedules.parse_schedule(schedule, schedule_tz, missed)

    def decorate(func: Callable[..., Any]) -> BackgroundTask[Any, Any]:
        if isinstance(func, BackgroundTask):
            raise ConfigurationError(f"{func.name} is already a background task")
        if not callable(func):
            raise ConfigurationError(f"@background needs a function, not {func!r}")
        task_name = name or f"{func.__module__}.{func.__qualname__}"
        if planned is not None:
            schedules.check_no_required_args(func, task_name)
        spec = TaskSpec(
            func,
            name=task_name,
            queue=queue,
            retry=policy,
            timeout=timeout,
            serializer=serializer,
            flow=limits,
            priority=priority,
        )
        registry.register(spec)
        task: BackgroundTask[Any, Any] = BackgroundTask(func, spec)
        if planned is not None:
            schedules.register(task, planned)
        return task

    if fn is not None:
        return decorate(fn)
    return decorate


# -- the configured backend (held by ``config``) ----------------------------------------
def configure_background_tasks(
    backend: BackgroundBackend,
    *,
    signing_key: str | bytes | None = None,
    max_payload_bytes: int | None = 1_048_576,
    idempotency_ttl: float = 86_400.0,
    concurrency_lease: float = 30.0,
    heartbeat_interval: float | None = None,
) -> None:
    """Make ``backend`` the default for every ``@background`` task.

    Tasks look the backend up when ``.delay()`` is called, so calling this again swaps
    backends for later calls without re-decorating anything.

    The backend is held by :mod:`pacificpy.background.config`. This is where it takes over
    the process (its ``attach()``: for Celery, the app's worker hooks and the task
    registry listener); constructing a backend changes nothing process-wide.

    Args:
        backend: a local executor, ``CeleryBackgroundBackend`` or ``ARQBackgroundBackend``.
        signing_key: sign every message with HMAC-SHA256; workers configured with the same
            key reject unsigned or altered messages into the dead-letter queue.
        max_payload_bytes: largest encoded message accepted at the call site.
        idempotency_ttl: seconds an ``idempotency_key`` keeps pointing at its first task.
        concurrency_lease: seconds a ``concurrency=`` slot outlives the last renewal by
            its holder (renewed every third of it while the task runs): how long a slot
            of a killed worker stays taken.
        heartbeat_interval: seconds between the heartbeats workers write to the worker
            registry (a worker not seen for 3 of them is shown as lost); None keeps the
            backend's (10 s unless set).

    Raises:
        ConfigurationError: ``backend`` does not implement ``BackgroundBackend``, or an
            option is out of range (``heartbeat_interval`` not a positive number).
    """
    if not isinstance(backend, BackgroundBackend):
        raise ConfigurationError(
            f"configure_background_tasks needs a BackgroundBackend (local executor, Celery or "
            f"ARQ backend), not {type(backend).__name__}"
        )
    if isinstance(signing_key, str):
        signing_key = signing_key.encode("utf-8")
    if signing_key is not None and len(signing_key) < 16:
        raise ConfigurationError("signing_key must be at least 16 bytes long")
    check = getattr(backend, "check_configuration", None)
    if check is not None:  # a backend that cannot work is refused before it is installed
        check()
    if not concurrency_lease > 0:
        raise ConfigurationError("concurrency_lease must be a positive number of seconds")
    backend.signing_key = signing_key
    backend.max_payload_bytes = max_payload_bytes
    backend.idempotency_ttl = idempotency_ttl
    backend.concurrency_lease = concurrency_lease
    if heartbeat_interval is not None:
        from pacificpy.background.workers import check_interval

        backend.heartbeat_interval = check_interval(heartbeat_interval)
    swap_backend(backend)
    attach = getattr(backend, "attach", None)
    if attach is not None:
        attach()
