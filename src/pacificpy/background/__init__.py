"""PacificPy's background tasks: ``@background``, backends, ``current_task()``.

The fixed import paths live in the submodules (``decorators``, ``local``, ``backend``,
``monitor``); this package re-exports the everyday names.
"""

from __future__ import annotations

from typing import Any

from pacificpy.background.backend import BackgroundBackend
from pacificpy.background.dead_letter import DeadLetter
from pacificpy.background.decorators import (
    BackgroundTask,
    background,
    configure_background_tasks,
    get_backend,
    reset_background_tasks,
)
from pacificpy.background.local import LocalExecutor, get_local_executor
from pacificpy.background.task import TaskContext, TaskHandle, current_task
from pacificpy.errors import (
    BackendError,
    BackendNotAvailable,
    BackendUnavailable,
    BackgroundError,
    ConfigurationError,
    DeadLetterError,
    DeadLetterNotRequeueable,
    DeadLetterUndecodable,
    EnqueueError,
    MessageRejected,
    PacificPyError,
    QueueFull,
    Retry,
    TaskArgumentError,
    TaskCancelled,
    TaskFailed,
    TaskNotFound,
    TaskSerializationError,
    TaskTimeout,
)
from pacificpy.types import TaskStatus

__all__ = [
    "BackendError",
    "BackendNotAvailable",
    "BackendUnavailable",
    "BackgroundBackend",
    "BackgroundError",
    "BackgroundTask",
    "ConfigurationError",
    "DeadLetter",
    "DeadLetterError",
    "DeadLetterNotRequeueable",
    "DeadLetterUndecodable",
    "EnqueueError",
    "LocalExecutor",
    "MessageRejected",
    "PacificPyError",
    "QueueFull",
    "Retry",
    "TaskArgumentError",
    "TaskCancelled",
    "TaskContext",
    "TaskFailed",
    "TaskHandle",
    "TaskNotFound",
    "TaskSerializationError",
    "TaskStatus",
    "TaskTimeout",
    "background",
    "configure_background_tasks",
    "current_task",
    "get_backend",
    "get_handle",
    "get_local_executor",
    "get_queue_length",
    "reset_background_tasks",
]


def get_queue_length(queue: str = "default") -> int:
    """How many tasks wait in ``queue`` on the configured backend (blocking call)."""
    return get_backend().queue_length_sync(queue)


def get_handle(task_id: str) -> TaskHandle[Any]:
    """The ``TaskHandle`` of any task id, on the configured backend.

    The id may come from another process of the app: a request that enqueued the task, a
    worker, the CLI. ``status()`` and ``result()`` work as on the handle ``.delay()``
    returned. An id nobody knows has status ``None``; ``result(timeout)`` on it waits,
    then raises ``TimeoutError``. Across processes the status of a task that has not ended
    comes from the monitor, so share its store (``configure_task_monitor(redis_url=...)``).

    Raises:
        TypeError: ``task_id`` is not a string.
    """
    return get_backend().get_handle(task_id)
