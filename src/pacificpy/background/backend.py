"""The backend contract, and lazy access to the Celery and ARQ backends.

A backend is a transport (publish, consume, queue length) over a
:class:`~pacificpy.background.backends.state.TaskState`. It does not retry, record or
decide what is dead: :mod:`pacificpy.background.execution` decides, and
:func:`~pacificpy.background.execution.settle` carries the decision out. What is written
once over the state lives here: dead-letter list / requeue / purge, ``wait_result``,
idempotency claims and the poison guard.

Each backend declares its primary form with :attr:`BackgroundBackend.blocking`: a
backend whose sync methods do network I/O gets async twins that run them on a thread;
one whose sync methods never block (in memory) gets twins that call them directly.

``CeleryBackgroundBackend`` and ``ARQBackgroundBackend`` are importable from here without
their extras installed; constructing one without its extra raises ``BackendNotAvailable``
naming the ``pip install`` to run.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pacificpy.background.dead_letter import DeadLetter
from pacificpy.background.monitor import InMemoryMonitorStore, get_task_monitor
from pacificpy.background.task import Message, Outcome, TaskEnvelope, TaskHandle
from pacificpy.errors import (
    BackendNotAvailable,
    EnqueueError,
    MessageRejected,
    PacificPyError,
    TaskFailed,
)
from pacificpy.types import TaskStatus

if TYPE_CHECKING:
    from pacificpy.background.backends.state import TaskState
    from pacificpy.background.execution import Decision

__all__ = [
    "ARQBackgroundBackend",
    "BackgroundBackend",
    "CeleryBackgroundBackend",
    "SQLiteBackgroundBackend",
]

logger = logging.getLogger("pacificpy.background")
R = TypeVar("R")
A = TypeVar("A")

#: Options every backend understands; a backend may extend the set.
BASE_OPTIONS = frozenset(
    {"countdown", "eta", "task_id", "idempotency_key", "queue", "retries", "timeout", "pickle"}
) | {"priority"}


class BackgroundBackend(abc.ABC):
    """Transport for task messages: accept them now, run them later.

    Subclasses supply the transport (:meth:`enqueue` and usually :meth:`enqueue_sync`,
    :meth:`queue_length`) and a :attr:`state`; results, status, dead letters, idempotency
    and the poison guard are written here over the state. Every I/O method is async with
    a ``_sync`` twin; see :attr:`blocking` for how the base derives the twin.
    """

    supported_options: ClassVar[frozenset[str]] = BASE_OPTIONS
    #: Human name used in messages and the CLI ("local", "celery", "arq").
    kind: ClassVar[str] = "backend"
    #: The form of :meth:`enqueue` the backend writes ("async" or "sync"); the base
    #: derives the other.
    primary: ClassVar[str] = "async"
    #: True when the sync forms do network I/O: their async twins run them on a thread.
    #: False when they never block (in-memory state): the twins call them directly.
    blocking: ClassVar[bool] = True
    #: False for backends that run tasks inline (eager, capturing): they ignore
    #: ``concurrency=`` and ``rate_limit=`` (see :mod:`pacificpy.background.flow`).
    flow_control: ClassVar[bool] = True

    def __init__(
        self,
        *,
        allow_pickle: bool = False,
        shutdown_timeout: float = 30.0,
        max_deliveries: int = 5,
    ) -> None:
        self.allow_pickle = allow_pickle
        self.shutdown_timeout = shutdown_timeout
        self.max_deliveries = max_deliveries
        #: Set by ``configure_background_tasks(..., signing_key=...)``.
        self.signing_key: bytes | None = None
        #: Largest encoded message accepted at the call site (None: no limit).
        self.max_payload_bytes: int | None = 1_048_576
        #: How long an idempotency key keeps answering with its first task, in seconds.
        self.idempotency_ttl: float = 86_400.0
        #: Seconds a concurrency slot outlives its holder's last renewal.
        self.concurrency_lease: float = 30.0
        #: How long a cancel is remembered (a task delayed past it would still run), s.
        self.tombstone_ttl: float = 7 * 86_400.0
        #: Seconds between the heartbeats of this backend's workers in the worker registry
        #: (:mod:`pacificpy.background.workers`); set by ``configure_background_tasks``.
        self.heartbeat_interval: float = 10.0
        self._portal_loop: asyncio.AbstractEventLoop | None = None
        self._portal_lock = threading.Lock()
        self._inflight: set[asyncio.Future[Any]] = set()

    # -- lifecycle -----------------------------------------------------------------------
    async def startup(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Called on the serving loop when the app starts. No-op by default."""

    async def shutdown(self) -> None:
        """Called when the app stops: stop taking tasks, drain, release resources."""
        self._stop_portal()

    # -- producing -----------------------------------------------------------------------
    async def enqueue(self, message: Message, *, delay: float | None = None) -> None:
        """Hand ``message`` to the transport, to run after ``delay`` seconds if given.

        A backend whose :attr:`primary` form is ``"async"`` writes this; for a ``"sync"``
        one it is the twin of :meth:`enqueue_sync`.

        Raises:
            EnqueueError: the transport did not take it.
        """
        if self.primary != "sync":
            raise NotImplementedError(f"{type(self).__name__} must implement enqueue()")
        await self._twin(functools.partial(self.enqueue_sync, message, delay=delay))

    def enqueue_sync(self, message: Message, *, delay: float | None = None) -> None:
        """Blocking form of :meth:`enqueue`, for threads with no running event loop.

        For an ``"async"`` backend, the twin: :meth:`enqueue` run on a private loop thread.
        """
        if self.primary == "sync":
            raise NotImplementedError(f"{type(self).__name__} must implement enqueue_sync()")
        self.call_sync(self.enqueue(message, delay=delay))

    def submit(self, message: Message, delay: float | None) -> TaskHandle[Any]:
        """Start the enqueue now, in the caller's context, and return the handle.

        Inside a running loop the enqueue is started as a task (awaiting the handle
        waits for it); without one it is done synchronously and errors raise here.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            try:
                self.enqueue_sync(message, delay=delay)
            except PacificPyError:
                raise
            except Exception as exc:
                raise EnqueueError.of(message.task_name, message.task_id, exc) from exc
            return TaskHandle(message.task_id, message.task_name, self)
        fut = loop.create_task(self.enqueue(message, delay=delay))
        handle: TaskHandle[Any] = TaskHandle(message.task_id, message.task_name, self, pending=fut)
        self._inflight.add(fut)
        fut.add_done_callback(lambda f: self._enqueue_done(f, message))
        return handle

    def _enqueue_done(self, fut: asyncio.Future[Any], message: Message) -> None:
        self._inflight.discard(fut)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is None:
            return
        # Whether or not the caller awaits the handle, a lost enqueue must be visible.
        logger.error("enqueue of task %s %s failed: %s", message.task_name, message.task_id, exc)
        try:
            get_task_monitor().task_failed(message.envelope, f"EnqueueError: {exc}", None, None)
        except Exception:
            logger.exception("task monitor failed while recording an enqueue failure")

    @property
    @abc.abstractmethod
    def state(self) -> TaskState:
        """Outcomes, dead letters, idempotency keys and delivery counts."""

    # -- deriving twins --------------------------------------------------------------------
    async def _twin(self, fn: Callable[..., A], *args: Any) -> A:
        """The async twin of the sync ``fn``: on a thread if :attr:`blocking`, else direct."""
        if self.blocking:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    # -- results -------------------------------------------------------------------------
    async def wait_result(self, task_id: str, timeout: float | None = None) -> Outcome:
        """Wait for the final outcome of ``task_id``.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
        """
        return await self.state.await_outcome(task_id, timeout)

    def wait_result_sync(self, task_id: str, timeout: float | None = None) -> Outcome:
        """Blocking form of :meth:`wait_result`."""
        return self.state.wait_outcome(task_id, timeout)

    async def get_status(self, task_id: str) -> TaskStatus | None:
        """The stored outcome's status, else what the monitor recorded."""
        return await self._twin(self.get_status_sync, task_id)

    def get_status_sync(self, task_id: str) -> TaskStatus | None:
        """Blocking form of :meth:`get_status`."""
        outcome = self.state.get_outcome(task_id)
        if outcome is not None:
            return outcome.status
        rec = get_task_monitor().get(task_id)
        return rec.status if rec is not None else None

    def get_handle(self, task_id: str) -> TaskHandle[Any]:
        """The handle of any task id, as ``.delay()`` would have returned it.

        The id may come from another process (a request that enqueued it, a worker, the
        CLI): ``status()`` and ``result()`` read this backend's stored outcomes and the
        monitor. An id nobody knows has status ``None``, and ``result(timeout)`` on it
        waits, then raises ``TimeoutError``.

        Raises:
            TypeError: ``task_id`` is not a string.
        """
        if not isinstance(task_id, str):
            raise TypeError(f"a task id is a string, not {type(task_id).__name__}: {task_id!r}")
        try:
            rec = get_task_monitor().get(task_id)
        except Exception:  # a monitor store that cannot answer now: the name is cosmetic
            rec = None
        return TaskHandle(task_id, rec.name if rec is not None else "", self)

    # -- cancellation and progress -------------------------------------------------------
    async def cancel(self, task_id: str, *, terminate: bool = False, name: str = "") -> bool:
        """Cancel ``task_id`` (see ``TaskHandle.cancel``); True if it was stopped before
        it finished, False if it had finished (nothing changed)."""
        return await self._twin(
            functools.partial(self.cancel_sync, task_id, terminate=terminate, name=name)
        )

    def cancel_sync(self, task_id: str, *, terminate: bool = False, name: str = "") -> bool:
        """Blocking form of :meth:`cancel`.

        The state lays a tombstone and stores the ``cancelled`` outcome in one step,
        unless the task already has an outcome, and tells every worker process; the
        monitor records ``cancelled`` (counted once, here). A delivery of the task that
        arrives later is refused before it runs (:mod:`~pacificpy.background.execution`).

        Raises:
            TypeError: ``task_id`` is not a string.
            NotImplementedError: this backend's state keeps no tombstones.
        """
        if not isinstance(task_id, str):
            raise TypeError(f"a task id is a string, not {type(task_id).__name__}: {task_id!r}")
        outcome = Outcome(
            TaskStatus.CANCELLED,
            error="cancelled",
            error_type="TaskCancelled",
            attempts=0,
            finished_at=time.time(),
        )
        if not self.state.cancel(task_id, outcome, self.tombstone_ttl):
            return False
        logger.info("task %s %s cancelled", name, task_id)
        try:
            monitor = get_task_monitor()
            if not name:  # counted under the task's name when the monitor knows it
                rec = monitor.get(task_id)
                name = rec.name if rec is not None else ""
            monitor.task_cancelled(task_id, name or None)
        except Exception:
            logger.exception("task monitor failed while recording cancelled task %s", task_id)
        if terminate:
            self.terminate(task_id)
        return True

    def terminate(self, task_id: str) -> None:  # noqa: B027 - optional hook
        """Kill what runs ``task_id``, if the backend can (``cancel(terminate=True)``).

        By default nothing: a thread or a coroutine cannot be killed, and the cancel
        already reached the run. Celery's prefork pool can end the process.
        """

    async def get_progress(self, task_id: str) -> tuple[float, float | None, str | None] | None:
        """The latest progress ``task_id`` reported: ``(done, total, message)`` or None."""
        return await self._twin(self.get_progress_sync, task_id)

    def get_progress_sync(self, task_id: str) -> tuple[float, float | None, str | None] | None:
        """Blocking form of :meth:`get_progress` (read from the monitor)."""
        rec = get_task_monitor().get(task_id)
        if rec is None or rec.progress_done is None:
            return None
        return (rec.progress_done, rec.progress_total, rec.progress_message)

    def queued_hint(self, task_id: str) -> str:
        """Why a task may still be queued after a ``result()`` wait gave up, and what to do.

        By default: no worker may consume its queue (named when the monitor knows it).
        """
        queue = _queue_of(task_id)
        if queue is None:
            return "is a worker consuming its queue? (pacificpy worker MODULE)"
        option = "" if queue == "default" else f" -Q {queue}"
        return f"is a worker consuming queue {queue!r}? (pacificpy worker MODULE{option})"

    # -- queues --------------------------------------------------------------------------
    async def queue_length(self, queue: str = "default") -> int:
        """How many tasks wait in ``queue`` (not counting running ones)."""
        return await self._twin(self.queue_length_sync, queue)

    @abc.abstractmethod
    def queue_length_sync(self, queue: str = "default") -> int:
        """Blocking form of :meth:`queue_length`."""

    def oldest_waiting_sync(self, queue: str = "default") -> float | None:
        """When the oldest task waiting in ``queue`` became due to run (Unix time), or None
        when none waits; for the oldest-task age of ``/metrics``.

        Raises:
            NotImplementedError: the transport cannot tell.
        """
        raise NotImplementedError(f"the {self.kind} backend cannot tell its oldest task")

    # -- health ----------------------------------------------------------------------------
    def ping_sync(self) -> None:
        """One round trip to the transport and the state (health checks); raises if either
        does not answer. By default the state's."""
        self.state.ping()

    # -- dead letters --------------------------------------------------------------------
    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The newest ``limit`` dead letters, newest first."""
        return await self._twin(self.dead_letters_sync, limit)

    def dead_letters_sync(self, limit: int = 100) -> list[DeadLetter]:
        """Blocking form of :meth:`dead_letters`."""
        return self.state.list_dead_letters(limit)

    async def requeue_dead_letter(self, letter_id: str) -> str:
        """Enqueue the dead letter's task again as a fresh first attempt; return its task id.

        The kept message is decoded and verified first, with this backend's signing key and
        ``allow_pickle``; on any error below the letter stays in the queue.

        Raises:
            KeyError: no dead letter has that id.
            DeadLetterNotRequeueable: its message never decoded and verified.
            DeadLetterUndecodable: its message no longer decodes with this backend's settings.
            EnqueueError: the transport did not take the task (the letter is put back).
        """
        return await self._twin(self.requeue_dead_letter_sync, letter_id)

    def requeue_dead_letter_sync(self, letter_id: str) -> str:
        """Blocking form of :meth:`requeue_dead_letter`."""
        from pacificpy.background import execution

        state = self.state
        letter = state.get_dead_letter(letter_id)
        if letter is None:
            raise KeyError(f"no dead letter with id {letter_id!r}")
        message = execution.requeue_message(letter, self)  # raises with the letter in place
        if state.pop_dead_letter(letter_id) is None:  # requeued or purged meanwhile
            raise KeyError(f"no dead letter with id {letter_id!r}")
        try:
            self._resubmit(message, letter)
        except TaskFailed:
            raise  # an eager backend ran it (and failed again): the letter was used
        except BaseException:
            state.add_dead_letter(letter)  # not queued: back where it was
            raise
        return message.task_id

    def _resubmit(self, message: Message, letter: DeadLetter) -> None:
        """Enqueue a requeued letter's message: a new life of its task id.

        The monitor forgets the old record and is told ``queued`` before the message is
        published (a worker's ``running`` event written first would make a late ``queued``
        event stale); if the transport refuses it, the monitor says ``dead`` again.
        """
        self.state.clear_outcome(message.task_id)
        record_requeued(message.envelope)
        try:
            self.enqueue_sync(message)
        except BaseException:
            record_requeue_failed(message.envelope, letter)
            raise

    async def purge_dead_letters(self) -> int:
        """Delete every dead letter; return how many there were."""
        return await self._twin(self.purge_dead_letters_sync)

    def purge_dead_letters_sync(self) -> int:
        """Blocking form of :meth:`purge_dead_letters`."""
        return self.state.clear_dead_letters()

    # -- idempotency and the poison guard -------------------------------------------------
    @staticmethod
    def key_to_claim(env: TaskEnvelope) -> str | None:
        """The idempotency key enqueueing ``env`` takes: a first attempt's, if it has one
        (a retry or a requeue keeps the key its first attempt took)."""
        return env.idempotency_key if env.attempt == 1 else None

    def claim_key(self, env: TaskEnvelope) -> bool:
        """Take ``env``'s idempotency key; False when an earlier task holds it (enqueue
        nothing). A message with no key to claim is free to go."""
        key = self.key_to_claim(env)
        if key is None:
            return True
        return self.state.claim(env.task_name, key, env.task_id, self.idempotency_ttl)

    def publish_claimed(self, message: Message, publish: Callable[[], None]) -> None:
        """Claim ``message``'s idempotency key, then ``publish()``; a duplicate publishes
        nothing, and a failed publish releases the key (a retry of the call may run).

        Raises:
            EnqueueError: the state or the transport failed.
        """
        env = message.envelope
        try:
            claimed = self.claim_key(env)
        except PacificPyError:
            raise
        except Exception as exc:
            raise self.enqueue_error(message, exc) from exc
        if not claimed:
            return
        try:
            publish()
        except BaseException:
            key = self.key_to_claim(env)
            if key is not None:
                try:
                    self.state.release(env.task_name, key)
                except Exception:
                    logger.exception("could not release idempotency key of task %s", env.task_id)
            raise

    #: What to check after an enqueue failed ("Is the broker running?").
    enqueue_hint: ClassVar[str] = ""

    def enqueue_where(self) -> str:
        """Where an enqueue failed ("on the Celery broker redis://..."), for its error."""
        return ""

    def enqueue_error(self, message: Message, exc: BaseException) -> EnqueueError:
        """The ``EnqueueError`` of a transport failure, saying where and what to check."""
        return EnqueueError.of(message.task_name, message.task_id, exc,
                               where=self.enqueue_where(), hint=self.enqueue_hint)  # fmt: skip

    def poison_guard(
        self,
        data: bytes | str,
        env: TaskEnvelope,
        *,
        deliveries: int | None = None,
        count: bool = False,
    ) -> Decision | None:
        """The dead-letter decision of a poison message, or None to run it.

        ``deliveries`` is how many times this attempt was begun, this one included, when
        the transport counts them (ARQ's ``job_try``); with ``count`` the state counts them
        (a redelivered Celery message). Past :attr:`max_deliveries` its worker died each
        time: the message is poison.
        """
        if deliveries is None:
            if not count:
                return None
            deliveries = self.state.count_delivery(env.task_id, env.attempt) + 1
        if deliveries <= self.max_deliveries:
            return None
        from pacificpy.background import execution

        exc = MessageRejected(
            f"poison message: attempt {env.attempt} was delivered {deliveries - 1} times "
            f"without finishing (its worker died each time); max_deliveries="
            f"{self.max_deliveries}"
        )
        return execution.reject(data, exc, reason="poison", envelope=env)

    # -- helpers for subclasses ----------------------------------------------------------
    def call_sync(self, coro: Coroutine[Any, Any, R]) -> R:
        """Run ``coro`` on this backend's private loop thread and wait for it.

        Safe from any thread, including one with its own running loop (the private loop
        never runs user code, so there is no deadlock).
        """
        loop = self._portal()
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def _portal(self) -> asyncio.AbstractEventLoop:
        loop = self._portal_loop
        if loop is not None:
            return loop
        with self._portal_lock:
            if self._portal_loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name=f"pacificpy-{self.kind}-io", daemon=True
                )
                thread.start()
                self._portal_loop = loop
            return self._portal_loop

    def _stop_portal(self) -> None:
        loop, self._portal_loop = self._portal_loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)


def monitor_in_memory() -> bool:
    """True when this process's task monitor keeps its records in memory (no other process
    sees them, and it sees no other process's)."""
    return isinstance(get_task_monitor().store, InMemoryMonitorStore)


def record_requeued(env: TaskEnvelope) -> None:
    """Record the requeued task as ``queued`` (with its argument preview), written now."""
    try:
        monitor = get_task_monitor()
        monitor.task_queued(env)
        monitor.flush()
    except Exception:
        logger.exception("task monitor failed while recording requeued task %s", env.task_id)


def record_requeue_failed(env: TaskEnvelope, letter: DeadLetter) -> None:
    """The requeue did not reach the transport and the letter is back: say ``dead`` again."""
    try:
        get_task_monitor().task_dead(env.task_id, env.task_name, letter.error)
    except Exception:
        logger.exception("task monitor failed while restoring dead task %s", env.task_id)


def _queue_of(task_id: str) -> str | None:
    """The queue the monitor recorded for ``task_id``, if it can say."""
    try:
        rec = get_task_monitor().get(task_id)
    except Exception:
        return None
    return rec.queue if rec is not None else None


_LAZY = {
    "CeleryBackgroundBackend": ("pacificpy.background.backends.celery_backend", "celery"),
    "ARQBackgroundBackend": ("pacificpy.background.backends.arq_backend", "arq"),
    "SQLiteBackgroundBackend": ("pacificpy.background.backends.sqlite", "sqlite"),
}
#: The packages each extra installs: a backend whose import misses one of them is
#: "not available"; any other ImportError is a real bug and propagates.
_EXTRA_PACKAGES = {
    "celery": frozenset({"celery", "kombu", "billiard", "redis"}),
    "arq": frozenset({"arq", "redis"}),
    "sqlite": frozenset({"sqlite3", "_sqlite3"}),  # a Python built without SQLite
}


def _missing_backend(name: str, extra: str, error: ImportError) -> type:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        raise BackendNotAvailable(
            f"{name} needs the '{extra}' extra: pip install -e '.[{extra}]' in your clone "
            f"of PacificPy ({error})",
            cause=error,
        )

    return type(name, (), {"__init__": __init__, "__doc__": f"{name} (extra not installed)"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module_name, extra = _LAZY[name]
        import importlib

        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if (exc.name or "").partition(".")[0] not in _EXTRA_PACKAGES[extra]:
                raise
            cls = _missing_backend(name, extra, exc)
        else:
            cls = getattr(module, name)
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    from pacificpy.background.backends.arq_backend import ARQBackgroundBackend
    from pacificpy.background.backends.celery_backend import CeleryBackgroundBackend
    from pacificpy.background.backends.sqlite import SQLiteBackgroundBackend
