"""The backend contract, and lazy access to the Celery and ARQ backends.

A backend moves encoded messages from the caller to a worker and back the outcome. It
does not retry, record or decide what is dead: :mod:`pacificpy.background.execution`
does that, once, for all of them.

``CeleryBackgroundBackend`` and ``ARQBackgroundBackend`` are importable from here without
their extras installed; constructing one without its extra raises ``BackendNotAvailable``
naming the ``pip install`` to run.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pacificpy.background.dead_letter import DeadLetter
from pacificpy.background.monitor import InMemoryMonitorStore, get_task_monitor
from pacificpy.background.task import Message, Outcome, TaskHandle
from pacificpy.errors import BackendNotAvailable, EnqueueError, PacificPyError
from pacificpy.types import TaskStatus

__all__ = ["ARQBackgroundBackend", "BackgroundBackend", "CeleryBackgroundBackend"]

logger = logging.getLogger("pacificpy.background")
R = TypeVar("R")

#: Options every backend understands; a backend may extend the set.
BASE_OPTIONS = frozenset(
    {"countdown", "eta", "task_id", "idempotency_key", "queue", "retries", "timeout", "pickle"}
)


class BackgroundBackend(abc.ABC):
    """Transport for task messages: accept them now, run them later.

    Subclasses implement :meth:`enqueue` (and usually :meth:`enqueue_sync`), the result
    and status look-ups, queue length and the dead-letter operations. Every I/O method is
    async with a ``_sync`` twin; the base class derives whichever a subclass leaves out
    by running the async form on a private event-loop thread.
    """

    supported_options: ClassVar[frozenset[str]] = BASE_OPTIONS
    #: Human name used in messages and the CLI ("local", "celery", "arq").
    kind: ClassVar[str] = "backend"

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
    @abc.abstractmethod
    async def enqueue(self, message: Message, *, delay: float | None = None) -> None:
        """Hand ``message`` to the transport, to run after ``delay`` seconds if given.

        Raises:
            EnqueueError: the transport did not take it.
        """

    def enqueue_sync(self, message: Message, *, delay: float | None = None) -> None:
        """Blocking form of :meth:`enqueue`, for threads with no running event loop."""
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

    # -- results -------------------------------------------------------------------------
    @abc.abstractmethod
    async def wait_result(self, task_id: str, timeout: float | None = None) -> Outcome:
        """Wait for the final outcome of ``task_id``.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
        """

    def wait_result_sync(self, task_id: str, timeout: float | None = None) -> Outcome:
        """Blocking form of :meth:`wait_result`."""
        return self.call_sync(self.wait_result(task_id, timeout))

    async def get_status(self, task_id: str) -> TaskStatus | None:
        """The task's state; by default what the monitor recorded."""
        return self.get_status_sync(task_id)

    def get_status_sync(self, task_id: str) -> TaskStatus | None:
        """Blocking form of :meth:`get_status`."""
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
    @abc.abstractmethod
    async def queue_length(self, queue: str = "default") -> int:
        """How many tasks wait in ``queue`` (not counting running ones)."""

    def queue_length_sync(self, queue: str = "default") -> int:
        """Blocking form of :meth:`queue_length`."""
        return self.call_sync(self.queue_length(queue))

    # -- dead letters --------------------------------------------------------------------
    @abc.abstractmethod
    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The newest ``limit`` dead letters, newest first."""

    @abc.abstractmethod
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

    @abc.abstractmethod
    async def purge_dead_letters(self) -> int:
        """Delete every dead letter; return how many there were."""

    def dead_letters_sync(self, limit: int = 100) -> list[DeadLetter]:
        """Blocking form of :meth:`dead_letters`."""
        return self.call_sync(self.dead_letters(limit))

    def requeue_dead_letter_sync(self, letter_id: str) -> str:
        """Blocking form of :meth:`requeue_dead_letter`."""
        return self.call_sync(self.requeue_dead_letter(letter_id))

    def purge_dead_letters_sync(self) -> int:
        """Blocking form of :meth:`purge_dead_letters`."""
        return self.call_sync(self.purge_dead_letters())

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
}
#: The packages each extra installs: a backend whose import misses one of them is
#: "not available"; any other ImportError is a real bug and propagates.
_EXTRA_PACKAGES = {
    "celery": frozenset({"celery", "kombu", "billiard", "redis"}),
    "arq": frozenset({"arq", "redis"}),
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
