"""What the Celery backend does to the user's Celery app: at-least-once defaults, which
PacificPy backend serves the app, ``@background`` tasks registered as Celery tasks, and
worker signals (default queues, unknown task names become dead letters).
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

from celery import Celery

from pacificpy.background import config, registry
from pacificpy.background.task import TaskSpec

if TYPE_CHECKING:
    from pacificpy.background.backends.celery_backend import CeleryBackgroundBackend

__all__ = [
    "AT_LEAST_ONCE_DEFAULTS",
    "apply_defaults",
    "attach",
    "backend_for",
    "connect_worker_signals",
    "register_task",
    "task_queues",
]

logger = logging.getLogger("pacificpy.background")

#: Celery settings PacificPy sets unless the user set them (SPEC §4.2).
AT_LEAST_ONCE_DEFAULTS: dict[str, Any] = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "broker_connection_retry_on_startup": True,
}

_REQUEST_CLS = "pacificpy.background.backends._celery_worker:PacificRequest"

# Celery app -> the backend that serves it (the last one attached), for worker-side hooks.
_BACKENDS: weakref.WeakKeyDictionary[Celery, CeleryBackgroundBackend] = weakref.WeakKeyDictionary()

# Celery app -> task names registered on it (``app.tasks`` would finalize the app).
_REGISTERED: weakref.WeakKeyDictionary[Celery, set[str]] = weakref.WeakKeyDictionary()


# -- which backend serves an app -----------------------------------------------------------
def attach(celery_app: Celery, backend: CeleryBackgroundBackend) -> None:
    """Make ``backend`` the one that runs ``celery_app``'s PacificPy tasks in a worker."""
    _BACKENDS[celery_app] = backend


def backend_for(celery_app: Any) -> CeleryBackgroundBackend | None:
    """The PacificPy backend attached to ``celery_app``, if any."""
    try:
        return _BACKENDS.get(celery_app)
    except TypeError:
        return None


# -- configuration -------------------------------------------------------------------------
def _user_set(conf: Any, key: str) -> bool:
    maps = getattr(conf, "maps", None)
    if not maps:
        return False
    # Settings is a ChainMap: [changes, config source(s)..., Celery's defaults].
    return any(key in m for m in maps[:-1])


def apply_defaults(app: Celery) -> None:
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


# -- tasks ---------------------------------------------------------------------------------
def register_task(app: Celery, spec: TaskSpec, limits: tuple[float | None, float | None]) -> None:
    """Register ``spec`` with ``app`` under its own name (the worker runs it by name).

    The Celery task's one argument is the PacificPy message; its body hands it to the
    backend attached to the app (:func:`~._celery_worker.deliver`).

    Args:
        app: the Celery app.
        spec: the task.
        limits: Celery's ``(soft, hard)`` time limits for it.
    """
    names = _REGISTERED.setdefault(app, set())
    if spec.name in names:
        return
    names.add(spec.name)
    soft, hard = limits

    def run(task: Any, *args: Any, **kwargs: Any) -> None:
        from pacificpy.background.backends._celery_worker import deliver

        backend = _BACKENDS.get(task.app)
        if backend is None:  # pragma: no cover - the app always has one here
            raise RuntimeError(f"no PacificPy backend serves Celery app {task.app!r}")
        info = task.request.delivery_info or {}
        # A PacificPy message is the one argument. Anything else (Celery's own send_task with
        # other arguments) must reach deliver too, which dead-letters it: with a fixed
        # signature Celery would fail the call itself and ack it with no trace kept.
        data: object = args[0] if len(args) == 1 and not kwargs else {"args": args, **kwargs}
        deliver(backend, data, redelivered=bool(info.get("redelivered")))

    # Celery compiles a ``def <__name__>(...)`` to check call signatures: a task named
    # ``send-email`` must still give it an identifier.
    short = spec.name.rpartition(".")[2]
    run.__name__ = short if short.isidentifier() else "task"
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


def task_queues() -> list[str]:
    """Every queue a registered task declares (what a worker consumes by default)."""
    return sorted({spec.queue for spec in registry.all_specs()} | {"default"})


# -- worker signals ------------------------------------------------------------------------
_signals_connected = False


def connect_worker_signals() -> None:
    """Worker-side hooks (no-ops in producers): default queues and unknown tasks."""
    global _signals_connected
    if _signals_connected:
        return
    from celery import signals

    signals.celeryd_after_setup.connect(_on_worker_setup, weak=False)
    signals.task_unknown.connect(_on_unknown_task, weak=False)
    _signals_connected = True


@config.resets(__name__, "_BACKENDS", "_signals_connected")
def _detach_all() -> None:
    """Forget which backend serves each app and disconnect the worker signals."""
    global _signals_connected
    _BACKENDS.clear()
    if _signals_connected:
        from celery import signals

        signals.celeryd_after_setup.disconnect(_on_worker_setup)
        signals.task_unknown.disconnect(_on_unknown_task)
        _signals_connected = False


def _on_worker_setup(sender: Any = None, instance: Any = None, **_: Any) -> None:
    app = getattr(instance, "app", None)
    backend = backend_for(app)
    if app is None or backend is None:
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
        from pacificpy.background.backends._celery_worker import unknown_task

        payload = message.decode()
        args = payload[0] if isinstance(payload, (list, tuple)) and payload else None
        if not (isinstance(args, (list, tuple)) and len(args) == 1 and isinstance(args[0], str)):
            return  # not a PacificPy message: Celery's own handling stands
        unknown_task(backend, args[0], name)
    except Exception:
        logger.exception("could not dead-letter the unknown task %s", name)
