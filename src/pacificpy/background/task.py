"""What was decorated (``TaskSpec``), what travels (``TaskEnvelope``), what the caller holds.

A ``TaskEnvelope`` is the frozen description of one attempt of one task. It is encoded to
bytes by :mod:`pacificpy.background._codec` and those bytes are all a backend moves.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import datetime
import inspect
import itertools
import os
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pacificpy.background._argtypes import ArgPlan
from pacificpy.background._frozen import quick_init
from pacificpy.background._jsonvalue import dumps_value
from pacificpy.background.monitor.previews import (
    ERROR_CHARS,
    TRACEBACK_CHARS,
    cap_error,
    cap_traceback,
)
from pacificpy.errors import (
    EnqueueError,
    TaskArgumentError,
    TaskCancelled,
    TaskFailed,
    TaskTimeout,
)
from pacificpy.types import TaskStatus

if TYPE_CHECKING:
    from pacificpy.background.backend import BackgroundBackend
    from pacificpy.background.flow import FlowLimits
    from pacificpy.background.retry import RetryPolicy

__all__ = [
    "Message",
    "Outcome",
    "TaskContext",
    "TaskEnvelope",
    "TaskHandle",
    "TaskSpec",
    "current_task",
    "new_task_id",
]

T = TypeVar("T")


class _IdSource:
    """Task ids: 80 random bits per process, then a 48-bit counter (32 hex characters).

    Unique across processes like a uuid4's hex, at a fraction of its cost (no system call
    per id); reseeded in a forked child so parent and child never share a prefix.
    """

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = os.urandom(10).hex()
        self.counter = itertools.count(int.from_bytes(os.urandom(3), "big"))

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFFFFFF:012x}"


#: A fresh task id (32 hex characters).
new_task_id: Callable[[], str] = _IdSource()


@quick_init
@dataclasses.dataclass(frozen=True, slots=True)
class TaskEnvelope:
    """One attempt of one task, as it travels from the caller to a worker."""

    task_id: str
    task_name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    queue: str = "default"
    attempt: int = 1
    enqueued_at: float = 0.0
    parent_id: str | None = None
    serializer: str = "json"
    idempotency_key: str | None = None
    trace: dict[str, str] | None = None
    #: 0 to 9, higher first within a queue (flow control).
    priority: int = 0

    def next_attempt(self) -> TaskEnvelope:
        """The envelope of the following attempt (same id, attempt + 1)."""
        return dataclasses.replace(self, attempt=self.attempt + 1)

    def fresh(self) -> TaskEnvelope:
        """The same call, as a new first attempt enqueued now (used to requeue dead letters)."""
        return dataclasses.replace(self, attempt=1, enqueued_at=time.time())


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """An envelope together with its encoded bytes: the unit a backend enqueues.

    ``trusted`` is true only for messages this process's producer built (``.delay()``,
    retries): their ``envelope`` is exactly what ``data`` decodes to. A message that
    arrived from elsewhere carries a best-effort envelope and must be decoded.
    """

    envelope: TaskEnvelope
    data: bytes
    trusted: bool = False

    @property
    def task_id(self) -> str:
        return self.envelope.task_id

    @property
    def task_name(self) -> str:
        return self.envelope.task_name

    @property
    def queue(self) -> str:
        return self.envelope.queue


#: Longest progress message kept (longer ones are cut).
PROGRESS_MESSAGE_CHARS = 500


@quick_init
@dataclasses.dataclass(frozen=True, slots=True)
class TaskContext:
    """What ``current_task()`` returns inside a running task."""

    id: str
    name: str
    attempt: int
    queue: str
    enqueued_at: float
    parent_id: str | None
    #: The key the task was enqueued with (``apply_async(idempotency_key=...)``).
    idempotency_key: str | None = None

    @property
    def scheduled_for(self) -> datetime.datetime | None:
        """The slot a periodic task's run is for (UTC), or None for a run no schedule
        enqueued. A catch-up run (``missed="once"``) tells the newest slot it stands for."""
        if self.idempotency_key is None:
            return None
        from pacificpy.background.schedules import slot_of_key

        return slot_of_key(self.name, self.idempotency_key)

    #: This run's entry in :mod:`pacificpy.background.cancellation` (None outside a run).
    run: Any = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def cancelled(self) -> bool:
        """True once ``handle.cancel()`` reached this run: a sync task should stop soon
        (return or raise); whatever it returns then is discarded and the task ends
        ``cancelled``. An async task gets ``CancelledError`` at its next await instead."""
        run = self.run
        return run is not None and run.cancelled

    def set_progress(
        self, done: float, total: float | None = None, message: str | None = None
    ) -> None:
        """Report how far the task got: ``done`` of ``total`` (any unit), and a message.

        The monitor record shows it (``progress_done``, ``progress_total``,
        ``progress_message``), ``handle.progress()`` returns it, the dashboard draws a bar
        and the task-events stream sends it. It costs one monitor event, no I/O in the
        task (the Redis monitor store writes from its own thread).

        Raises:
            TypeError: ``done`` or ``total`` is not a number, ``message`` not a string.
            ValueError: ``done`` is negative or not finite, ``total`` not positive.
        """
        done, total = _progress_numbers(done, total)
        if message is not None:
            if not isinstance(message, str):
                raise TypeError(f"progress message must be a string, not {type(message).__name__}")
            message = message[:PROGRESS_MESSAGE_CHARS]
        from pacificpy.background.config import get_task_monitor

        get_task_monitor().task_progress(self, done, total, message)


def _progress_numbers(done: Any, total: Any) -> tuple[float, float | None]:
    """``done`` and ``total`` checked (numbers, not bools; finite; ``total`` > 0)."""
    import math

    for label, value in (("done", done), ("total", total)):
        if value is None and label == "total":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"progress {label} must be a number, not {type(value).__name__}")
        if not math.isfinite(value):
            raise ValueError(f"progress {label} must be finite, not {value!r}")
    if done < 0:
        raise ValueError(f"progress done must not be negative, not {done!r}")
    if total is not None and total <= 0:
        raise ValueError(f"progress total must be positive, not {total!r}")
    return float(done), None if total is None else float(total)


_current: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "pacificpy_current_task", default=None
)


def current_task() -> TaskContext | None:
    """The task running in this thread or coroutine, or ``None`` outside a task."""
    return _current.get()


@dataclasses.dataclass
class Outcome:
    """How a task ended: its value, or its error. Stored where ``result()`` can find it."""

    status: TaskStatus
    value: Any = None
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    attempts: int = 1
    finished_at: float = 0.0

    def __post_init__(self) -> None:
        # Every store keeps outcomes (memory, Redis result keys): a 5 MB error message
        # would cost 5 MB in each. Cap them as the monitor does.
        if self.error is not None and len(self.error) > ERROR_CHARS:
            self.error = cap_error(self.error)
        if self.traceback is not None and len(self.traceback) > TRACEBACK_CHARS:
            self.traceback = cap_traceback(self.traceback)

    def unwrap(self, task_id: str, task_name: str | None = None) -> Any:
        """Return the value, or raise ``TaskFailed`` / ``TaskTimeout`` for a failure."""
        if self.status is TaskStatus.COMPLETED:
            return self.value
        if self.status is TaskStatus.CANCELLED:
            raise TaskCancelled(
                f"task {task_name or ''} {task_id} was cancelled",
                task_id=task_id,
                task_name=task_name,
            )
        cls = TaskTimeout if self.error_type == "TaskTimeout" else TaskFailed
        raise cls(
            f"task {task_name or ''} {task_id} {self.status.value}: "
            f"{self.error_type or 'Error'}: {self.error}",
            task_id=task_id,
            task_name=task_name,
            error_type=self.error_type,
            traceback=self.traceback,
            attempts=self.attempts,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form for stores that live outside this process.

        Shallow: the stores write it with orjson, which writes a dataclass in the value as
        ``dataclasses.asdict`` would, at a fraction of ``asdict``'s cost (8 µs an outcome).
        """
        return {
            "status": self.status.value,
            "value": self.value,
            "error": self.error,
            "error_type": self.error_type,
            "traceback": self.traceback,
            "attempts": self.attempts,
            "finished_at": self.finished_at,
        }

    def to_json(self) -> bytes:
        """:meth:`to_dict` as JSON bytes, as every store outside this process keeps it (a
        value JSON cannot carry as it is, converted: see ``_jsonvalue``)."""
        return dumps_value(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        """Inverse of :meth:`to_dict`."""
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in fields}
        kw["status"] = TaskStatus.parse(kw["status"])
        return cls(**kw)


class TaskSpec:
    """Everything ``@background`` recorded about one function."""

    __slots__ = (
        "_max_pos",
        "_min_pos",
        "_plan",
        "_simple",
        "flow",
        "fn",
        "is_async",
        "name",
        "priority",
        "queue",
        "retry",
        "serializer",
        "signature",
        "timeout",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str,
        queue: str,
        retry: RetryPolicy,
        timeout: float | None,
        serializer: str,
        flow: FlowLimits | None = None,
        priority: int = 0,
    ) -> None:
        self.fn = fn
        #: Concurrency and rate limits (None: none, the task pays nothing for them).
        self.flow = flow
        self.priority = priority
        self.name = name
        self.queue = queue
        self.retry = retry
        self.timeout = timeout
        self.serializer = serializer
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = inspect.signature(fn)
        params = list(self.signature.parameters.values())
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        # Fast path for the common shape (plain positional parameters, no *args/**kwargs):
        # a positional-only call binds iff its length fits; anything else uses Signature.bind.
        self._simple = all(p.kind in positional for p in params)
        self._max_pos = len(params)
        self._min_pos = sum(1 for p in params if p.default is inspect.Parameter.empty)
        self._plan: ArgPlan | None = None

    @property
    def plan(self) -> ArgPlan:
        """How the arguments travel: built at first use, when forward references resolve."""
        plan = self._plan
        if plan is None:
            plan = self._plan = ArgPlan(self.fn, self.signature, self.name, self.serializer)
        return plan

    def check_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise ``TaskArgumentError`` unless ``args``/``kwargs`` bind to the function."""
        if not kwargs and self._simple and self._min_pos <= len(args) <= self._max_pos:
            return
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TaskArgumentError(
                f"{self.name}{self.signature}: {exc}", task_name=self.name
            ) from None


class TaskHandle(Generic[T]):
    """What ``.delay()`` returns: the task's id, and ways to wait for its enqueue and result.

    ``await handle`` returns the handle once the backend confirmed the enqueue, raising
    ``EnqueueError`` if it failed. ``await handle.result()`` waits for the return value.
    ``pacificpy.background.get_handle(task_id)`` gives the same handle for any task id, in
    any process (its ``name`` is empty when nothing this process can read recorded it).
    """

    __slots__ = ("_backend", "_error", "_pending", "id", "name")

    def __init__(
        self,
        task_id: str,
        name: str,
        backend: BackgroundBackend,
        *,
        pending: asyncio.Future[Any] | None = None,
        error: BaseException | None = None,
    ) -> None:
        self.id = task_id
        self.name = name
        self._backend = backend
        self._pending = pending
        self._error = error

    def __repr__(self) -> str:
        return f"<TaskHandle {self.name} id={self.id}>"

    def __await__(self) -> Generator[Any, None, TaskHandle[T]]:
        if self._pending is None and self._error is None:
            return self  # already enqueued (the local executor): no coroutine needed
            yield  # pragma: no cover - makes this a generator
        return (yield from self._confirm().__await__())

    async def _confirm(self) -> TaskHandle[T]:
        if self._pending is not None:
            try:
                await asyncio.shield(self._pending)
            except EnqueueError:
                raise
            except Exception as exc:
                raise EnqueueError.of(self.name, self.id, exc) from exc
        if self._error is not None:
            raise self._error
        return self

    async def result(self, timeout: float | None = None) -> T:
        """Wait for the task to finish and return its value.

        Raises:
            TaskFailed: the task failed (``TaskTimeout`` if it ran past its timeout).
            TimeoutError: ``timeout`` seconds passed first; the message gives the task's
                status then (and, for a task still queued, asks whether a worker consumes
                its queue).
            EnqueueError: the task was never enqueued.
        """
        await self._confirm()
        try:
            outcome = await self._backend.wait_result(self.id, timeout)
        except TimeoutError as exc:
            try:
                status = await self._backend.get_status(self.id)
            except Exception:
                raise exc from None  # the look-up failed too: the plain timeout stands
            raise TimeoutError(self._waited_too_long(timeout, status)) from None
        value: T = outcome.unwrap(self.id, self.name)
        return value

    def result_sync(self, timeout: float | None = None) -> T:
        """Blocking form of :meth:`result`, for code with no running event loop."""
        if self._error is not None:
            raise self._error
        try:
            outcome = self._backend.wait_result_sync(self.id, timeout)
        except TimeoutError as exc:
            try:
                status = self._backend.get_status_sync(self.id)
            except Exception:
                raise exc from None
            raise TimeoutError(self._waited_too_long(timeout, status)) from None
        value: T = outcome.unwrap(self.id, self.name)
        return value

    def _waited_too_long(self, timeout: float | None, status: TaskStatus | None) -> str:
        """The message of a ``result(timeout)`` that gave up: what state the task is in."""
        task = f"task {self.name} {self.id}" if self.name else f"task {self.id}"
        waited = f"{timeout:g} s" if timeout is not None else "the wait"
        if status is None:
            return (
                f"{task} did not finish within {waited}, and nothing knows it (status None): "
                "no stored outcome and no monitor record has this id"
            )
        if status is TaskStatus.QUEUED:
            return f"{task} is still queued after {waited}: {self._backend.queued_hint(self.id)}"
        return f"{task} did not finish within {waited} (status: {status.value})"

    async def status(self) -> TaskStatus | None:
        """The task's current state as the backend or monitor knows it (``None``: unknown)."""
        return await self._backend.get_status(self.id)

    def status_sync(self) -> TaskStatus | None:
        """Blocking form of :meth:`status`."""
        return self._backend.get_status_sync(self.id)

    async def cancel(self, *, terminate: bool = False) -> bool:
        """Cancel the task, wherever it is: queued, delayed, waiting to retry, or running.

        A task not started never starts; a running async task gets ``CancelledError`` at
        its next await; a running sync task sees ``current_task().cancelled`` turn true.
        The task ends ``cancelled`` (``result()`` raises ``TaskCancelled``). With
        ``terminate`` a backend that can kill the process running it does so (Celery's
        prefork pool); elsewhere it is ignored.

        Returns:
            True if the task was stopped before it finished; False if it had already
            finished (nothing is changed then).
        """
        await self._confirm()
        return await self._backend.cancel(self.id, terminate=terminate, name=self.name)

    def cancel_sync(self, *, terminate: bool = False) -> bool:
        """Blocking form of :meth:`cancel`."""
        if self._error is not None:
            raise self._error
        return self._backend.cancel_sync(self.id, terminate=terminate, name=self.name)

    async def progress(self) -> tuple[float, float | None, str | None] | None:
        """The latest ``(done, total, message)`` the task reported with
        ``current_task().set_progress()``; None before any (or when no monitor record can
        be read: across processes share the monitor, ``configure_task_monitor(redis_url=)``).
        """
        return await self._backend.get_progress(self.id)

    def progress_sync(self) -> tuple[float, float | None, str | None] | None:
        """Blocking form of :meth:`progress`."""
        return self._backend.get_progress_sync(self.id)

    def events_url(self, app: Any, *, expires_in: float = 3600.0) -> str:
        """A URL of this task's event stream on ``app`` that needs no token: signed for
        this task id only, valid for ``expires_in`` seconds (``app.include_task_events()``
        must have been called).

        Raises:
            RuntimeError: ``app`` serves no task events.
        """
        events = getattr(getattr(app, "state", None), "task_events", None)
        if events is None:
            raise RuntimeError(
                "this app serves no task events: call app.include_task_events() first"
            )
        url: str = events.signed_url(self.id, expires_in=expires_in)
        return url
