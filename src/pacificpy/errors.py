"""Every exception PacificPy raises, in one tree.

::

    PacificPyError
    ├── ConfigurationError          bad or missing setup (unknown task option, duplicate name)
    ├── BackgroundError
    │   ├── TaskArgumentError       arguments do not bind to the task's signature
    │   ├── TaskSerializationError  an argument cannot be carried by the task's serializer
    │   ├── BackendError            the transport failed
    │   │   ├── BackendNotAvailable an optional extra is missing (alias BackendUnavailable)
    │   │   ├── EnqueueError        the backend did not accept a task
    │   │   │   └── QueueFull       the local queue is at max_queue_size
    │   ├── TaskNotFound            a message names a task no worker knows
    │   ├── MessageRejected         a message could not be decoded, verified or bound
    │   ├── DeadLetterError         a dead letter cannot be requeued (it stays where it is)
    │   │   ├── DeadLetterNotRequeueable  its message never verified
    │   │   └── DeadLetterUndecodable     its message no longer decodes here
    │   └── TaskFailed              a task ended in failure
    │       └── TaskTimeout         a task ran past its timeout
    └── Retry                       raised by task code to ask for a retry

``HTTPException`` is Starlette's and is re-exported from :mod:`pacificpy`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BackendError",
    "BackendNotAvailable",
    "BackendUnavailable",
    "BackgroundError",
    "ConfigurationError",
    "DeadLetterError",
    "DeadLetterNotRequeueable",
    "DeadLetterUndecodable",
    "EnqueueError",
    "MessageRejected",
    "PacificPyError",
    "QueueFull",
    "Retry",
    "TaskArgumentError",
    "TaskCancelled",
    "TaskFailed",
    "TaskNotFound",
    "TaskSerializationError",
    "TaskTimeout",
]


class PacificPyError(Exception):
    """Raised for every error PacificPy itself reports."""


class ConfigurationError(PacificPyError):
    """Raised when setup is wrong: an unknown task option, a duplicate task name, a bad backend."""


class BackgroundError(PacificPyError):
    """Raised for errors of the background-task system."""


class TaskArgumentError(BackgroundError, TypeError):
    """Raised at the call site when arguments do not bind to the task's signature."""

    def __init__(self, message: str, *, task_name: str | None = None) -> None:
        super().__init__(message)
        self.task_name = task_name


class TaskSerializationError(BackgroundError, TypeError):
    """Raised at the call site when an argument cannot be serialized for the task."""

    def __init__(
        self, message: str, *, task_name: str | None = None, argument: str | None = None
    ) -> None:
        super().__init__(message)
        self.task_name = task_name
        self.argument = argument


class BackendError(BackgroundError):
    """Raised when the transport behind a backend fails."""

    def __init__(self, message: str, *, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class BackendNotAvailable(BackendError):
    """Raised when a backend's optional dependency is missing or its service unreachable."""


BackendUnavailable = BackendNotAvailable


class EnqueueError(BackendError):
    """Raised when a backend did not accept a task; ``cause`` holds the underlying error."""

    def __init__(
        self,
        message: str,
        *,
        cause: BaseException | None = None,
        task_id: str | None = None,
        task_name: str | None = None,
    ) -> None:
        super().__init__(message, cause=cause)
        self.task_id = task_id
        self.task_name = task_name

    @classmethod
    def of(
        cls,
        task_name: str,
        task_id: str,
        exc: BaseException,
        *,
        where: str = "",
        hint: str = "",
    ) -> EnqueueError:
        """The error for task ``task_id`` that was not enqueued because of ``exc``.

        Args:
            task_name: the task's name.
            task_id: the task's id.
            exc: the transport's exception (kept as ``cause``).
            where: the broker, as the message names it (``"on ARQ at host:port/0"``).
            hint: what to check (``"Is Redis running?"``).
        """
        where = f" {where}" if where else ""
        hint = f". {hint}" if hint else ""
        return cls(
            f"could not enqueue {task_name} {task_id}{where}: {type(exc).__name__}: {exc}{hint}",
            cause=exc,
            task_id=task_id,
            task_name=task_name,
        )


class QueueFull(EnqueueError):
    """Raised at the call site when the local executor already holds ``max_queue_size`` tasks."""


class TaskNotFound(BackgroundError):
    """Raised when a message names a task that is not registered in this process."""

    def __init__(self, task_name: str) -> None:
        super().__init__(
            f"no task named {task_name!r} is registered here; import the module that "
            "declares it in the worker"
        )
        self.task_name = task_name


class MessageRejected(BackgroundError):
    """Raised when a message cannot be run: undecodable, unsigned, tampered or pickled."""


class DeadLetterError(BackgroundError):
    """Raised when a dead letter cannot be requeued; the letter stays in the queue unchanged."""

    def __init__(
        self,
        message: str,
        *,
        letter_id: str,
        task_id: str | None = None,
        task_name: str | None = None,
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(message)
        self.letter_id = letter_id
        self.task_id = task_id
        self.task_name = task_name
        self.cause = cause


class DeadLetterNotRequeueable(DeadLetterError):
    """Raised on requeue of a letter whose message never decoded and verified (forged,
    garbage, refused pickle): requeueing it would launder it into a valid task."""


class DeadLetterUndecodable(DeadLetterError):
    """Raised on requeue of a letter whose kept message no longer decodes with this backend's
    settings (the signing key was rotated, pickle is refused); ``cause`` says why."""


class TaskFailed(BackgroundError):
    """Raised by ``handle.result()`` when the task failed; carries the remote error."""

    def __init__(
        self,
        message: str,
        *,
        task_id: str | None = None,
        task_name: str | None = None,
        error_type: str | None = None,
        traceback: str | None = None,
        attempts: int | None = None,
    ) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.task_name = task_name
        self.error_type = error_type
        self.traceback = traceback
        self.attempts = attempts


class TaskCancelled(BackgroundError):
    """Raised by ``handle.result()`` when the task was cancelled (``handle.cancel()``).

    Not a ``TaskFailed``: a cancelled task did not fail, it was stopped on purpose.
    """

    def __init__(
        self, message: str, *, task_id: str | None = None, task_name: str | None = None
    ) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.task_name = task_name


class TaskTimeout(TaskFailed):
    """Raised when a task ran past its ``timeout``; ``result()`` of such a task raises it too."""


class Retry(PacificPyError):
    """Raised inside a task to ask for another attempt, after ``countdown`` seconds if given.

    A ``Retry`` consumes an attempt and is bounded by the task's ``retries``.
    """

    def __init__(self, countdown: float | None = None, *, reason: str | None = None) -> None:
        super().__init__(reason or "retry requested")
        self.countdown = countdown
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.countdown,), {"reason": self.reason})
