"""PacificPy: an ASGI web framework built around background tasks.

``from pacificpy import PacificPy`` gives the application; every error class of
:mod:`pacificpy.errors` and Starlette's ``HTTPException`` are importable from here too.
Importing this package never imports Celery or ARQ.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException

from pacificpy.app import PacificPy
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

__version__ = "0.1.0"

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
    "HTTPException",
    "MessageRejected",
    "PacificPy",
    "PacificPyError",
    "QueueFull",
    "Retry",
    "TaskArgumentError",
    "TaskCancelled",
    "TaskFailed",
    "TaskNotFound",
    "TaskSerializationError",
    "TaskTimeout",
    "__version__",
]
