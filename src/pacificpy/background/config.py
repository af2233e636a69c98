"""Process-wide configuration of background tasks, in one place, with one ``reset_all()``.

What a process configures once and every task then reads lives here and nowhere else:

* the **backend** that ``configure_background_tasks`` installed, or the local executor
  made on first use when nothing was configured (:func:`get_backend`);
* the **task monitor** that ``configure_task_monitor`` installed, or the in-memory one
  made on first use (:func:`get_task_monitor`);
* the **hooks**, where tracing and other observers plug in: :data:`trace_injectors`
  (called at ``.delay()``, each may add trace headers to the message) and
  :data:`run_wrappers` (context managers entered around every task run, on every
  backend).

State that belongs to one module (a cache, the tracer, the task registry's listeners,
Celery's worker signals) stays in that module and registers its reset here with
:func:`resets`, so :func:`reset_all` (the test fixtures call it after every test) puts
the whole process back where importing it left it. ``tests/test_architecture_config.py``
fails on a module-level mutable global that registers no reset and is not on its
allow-list.

This module imports nothing of PacificPy at import time: every other module may import it.
Backend constructors write nothing here; a backend takes over the process (the registry
listener, the worker hooks of its transport) when ``configure_background_tasks``
installs it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pacificpy.background.backend import BackgroundBackend
    from pacificpy.background.monitor import TaskMonitor
    from pacificpy.background.task import TaskEnvelope

__all__ = [
    "configured_backend",
    "get_backend",
    "get_task_monitor",
    "replace_task_monitor",
    "reset_all",
    "reset_background_tasks",
    "reset_task_monitor",
    "resets",
    "resettable",
    "run_wrappers",
    "swap_backend",
    "swap_task_monitor",
    "trace_injectors",
]

logger = logging.getLogger("pacificpy.background.monitor")

F = TypeVar("F", bound=Callable[[], None])

# "module:global" -> the function that puts it back; run in registration order.
_resets: dict[str, Callable[[], None]] = {}


def resets(module: str, *names: str) -> Callable[[F], F]:
    """Register the decorated function as the reset of ``module``'s globals ``names``.

    ``reset_all()`` calls it (once, however many names it covers). Use it for every
    module-level object that changes while the process runs.
    """

    def register(fn: F) -> F:
        for name in names:
            _resets[f"{module}:{name}"] = fn
        return fn

    return register


def resettable() -> frozenset[str]:
    """The ``module:global`` names whose reset is registered (of the modules imported)."""
    return frozenset(_resets)


def reset_all() -> None:
    """Put every process-wide setting back where importing PacificPy left it (tests).

    Forgets the configured backend (the default executor made here is shut down), closes
    and drops the monitor, removes every hook (tracing is off), and runs every reset
    registered with :func:`resets`. Declared tasks stay declared: they are declared once,
    when their module is imported, and a module is not imported twice.
    """
    errors: list[BaseException] = []
    for reset in dict.fromkeys(_resets.values()):
        try:
            reset()
        except Exception as exc:  # run the other resets; report the first failure
            errors.append(exc)
    if errors:
        raise errors[0]


# -- the backend ---------------------------------------------------------------------------
_backend: BackgroundBackend | None = None
_default: BackgroundBackend | None = None
_backend_lock = threading.Lock()


def get_backend() -> BackgroundBackend:
    """The configured backend; without any configuration, a local executor made on first use."""
    global _default
    backend = _backend
    if backend is not None:
        return backend
    with _backend_lock:
        if _backend is not None:
            return _backend
        if _default is None:
            from pacificpy.background.local import get_local_executor

            _default = get_local_executor()
        return _default


def configured_backend() -> BackgroundBackend | None:
    """The backend ``configure_background_tasks`` installed, or ``None``."""
    return _backend


def swap_backend(backend: BackgroundBackend | None) -> BackgroundBackend | None:
    """Install ``backend`` as configured (``None``: unconfigured) and return the previous one."""
    global _backend
    with _backend_lock:
        previous, _backend = _backend, backend
    return previous


@resets(__name__, "_backend", "_default")
def reset_background_tasks() -> None:
    """Forget the configured backend and shut down the default executor made here (tests)."""
    global _backend, _default
    with _backend_lock:
        default, _default = _default, None
        _backend = None
    if default is not None:
        shutdown_sync = getattr(default, "shutdown_sync", None)
        if shutdown_sync is not None:
            shutdown_sync(timeout=5.0)


# -- the monitor ---------------------------------------------------------------------------
_monitor: TaskMonitor | None = None
_monitor_lock = threading.Lock()


def get_task_monitor() -> TaskMonitor:
    """The process's monitor; an in-memory one is created on first use."""
    mon = _monitor
    if mon is not None:
        return mon
    return _default_monitor()


def _default_monitor() -> TaskMonitor:
    global _monitor
    with _monitor_lock:
        if _monitor is None:
            from pacificpy.background.monitor import TaskMonitor

            _monitor = TaskMonitor()
        return _monitor


def swap_task_monitor(monitor: TaskMonitor | None) -> TaskMonitor | None:
    """Install ``monitor`` as it is and return the one it replaces, neither closed.

    For code that borrows the monitor for a while and gives it back (the testing helpers
    of :mod:`pacificpy.testing`); ``configure_task_monitor`` is for everything else.
    """
    global _monitor
    with _monitor_lock:
        previous, _monitor = _monitor, monitor
    return previous


def replace_task_monitor(monitor: TaskMonitor | None) -> None:
    """Install ``monitor`` (``None``: a fresh one on next use) and close the previous one.

    Closing writes the previous store's buffered events; a failure there is logged.
    """
    previous = swap_task_monitor(monitor)
    if previous is not None:
        try:
            previous.close()
        except Exception:
            logger.exception("closing the previous task monitor failed")


@resets(__name__, "_monitor")
def reset_task_monitor() -> None:
    """Close and drop the configured monitor (tests); the next use makes a fresh one."""
    replace_task_monitor(None)


# -- hooks ---------------------------------------------------------------------------------
#: Called at ``.delay()``; each may return headers for the message's ``trace`` field.
trace_injectors: list[Callable[[], dict[str, str] | None]] = []
#: Context-manager factories entered around every task run, on every backend.
run_wrappers: list[Callable[[TaskEnvelope], contextlib.AbstractContextManager[Any]]] = []


@resets(__name__, "trace_injectors", "run_wrappers")
def _clear_hooks() -> None:
    # Cleared in place: the task machinery holds these very lists.
    trace_injectors.clear()
    run_wrappers.clear()
