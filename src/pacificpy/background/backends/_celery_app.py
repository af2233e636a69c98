"""What the Celery backend does to the user's Celery app: at-least-once defaults (the
broker's visibility timeout among them), which PacificPy backend serves the app,
``@background`` tasks registered as Celery tasks, and worker signals (default queues,
unknown task names become dead letters).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from celery import Celery

from pacificpy.background import config, registry
from pacificpy.background.backends._celery_publish import AMQP_SCHEMES, PRIORITY_STEPS
from pacificpy.background.task import TaskSpec

if TYPE_CHECKING:
    from pacificpy.background.backends.celery_backend import CeleryBackgroundBackend

__all__ = [
    "AT_LEAST_ONCE_DEFAULTS",
    "VISIBILITY_TIMEOUT_FLOOR",
    "VISIBILITY_TIMEOUT_MARGIN",
    "apply_defaults",
    "attach",
    "backend_for",
    "connect_worker_signals",
    "register_task",
    "task_queues",
    "visibility_timeout_for",
]

logger = logging.getLogger("pacificpy.background")

#: Celery settings PacificPy sets unless the user set them (SPEC §4.2).
AT_LEAST_ONCE_DEFAULTS: dict[str, Any] = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "broker_connection_retry_on_startup": True,
}

#: The broker visibility timeout PacificPy sets (unless the user set one) is at least this
#: many seconds: a message whose whole worker died is delivered again this long after it
#: was taken (kombu's own default is one hour).
VISIBILITY_TIMEOUT_FLOOR = 300.0
#: ... and at least this much longer than the longest declared task timeout (plus
#: ``time_limit_grace``) or retry delay, so that no declared task is redelivered while it
#: still runs or waits for its retry.
VISIBILITY_TIMEOUT_MARGIN = 60.0

_REQUEST_CLS = "pacificpy.background.backends._celery_worker:PacificRequest"

# Celery app -> the backend that serves it (the last one attached), for worker-side hooks.
_BACKENDS: weakref.WeakKeyDictionary[Celery, CeleryBackgroundBackend] = weakref.WeakKeyDictionary()

# Celery app -> [time_limit_grace, the visibility timeout PacificPy last set], for apps whose
# visibility timeout PacificPy sets (the user set none).
_VISIBILITY: weakref.WeakKeyDictionary[Celery, list[float]] = weakref.WeakKeyDictionary()

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


def visibility_timeout_for(specs: Iterable[TaskSpec], grace: float) -> float:
    """The broker visibility timeout PacificPy sets: :data:`VISIBILITY_TIMEOUT_FLOOR`, or
    the longest declared timeout (plus ``grace``) or retry delay plus
    :data:`VISIBILITY_TIMEOUT_MARGIN` if that is longer."""
    longest = 0.0
    for spec in specs:
        if spec.timeout is not None:
            longest = max(longest, spec.timeout + grace)
        policy = spec.retry
        if policy.retries > 0:
            exponent = min(policy.retries - 1, 64)
            longest = max(longest, min(policy.backoff_max, policy.backoff * 2.0**exponent))
    return max(VISIBILITY_TIMEOUT_FLOOR, longest + VISIBILITY_TIMEOUT_MARGIN)


def apply_defaults(app: Celery, time_limit_grace: float = 5.0) -> None:
    """Apply :data:`AT_LEAST_ONCE_DEFAULTS` once the app's configuration is loaded, and a
    broker visibility timeout (:func:`visibility_timeout_for`) unless the user set one in
    ``broker_transport_options``."""

    def apply(conf: Any) -> None:
        for key, value in AT_LEAST_ONCE_DEFAULTS.items():
            if not _user_set(conf, key):
                conf[key] = value
        options = conf.get("broker_transport_options") or {}
        if "priority_steps" not in options:  # one Redis list per priority (flow control)
            options = {**options, "priority_steps": list(PRIORITY_STEPS)}
            conf["broker_transport_options"] = options
        if "visibility_timeout" not in options and app not in _VISIBILITY:
            _VISIBILITY[app] = [time_limit_grace, -1.0]
        _set_visibility_timeout(app, conf)
        _confirm_publishes(conf)

    if app.configured:
        apply(app.conf)
        return

    def on_configured(sender: Any = None, source: Any = None, **_: Any) -> None:
        apply(source if source is not None else app.conf)

    app.on_after_configure.connect(on_configured, weak=False)


def _confirm_publishes(conf: Any) -> None:
    """On RabbitMQ, publish with confirms (``confirm_publish``) unless the user said no:
    a publish returns once the broker has taken the message."""
    url = conf.get("broker_write_url") or conf.get("broker_url") or ""
    if isinstance(url, (list, tuple)):
        url = url[0] if url else ""
    if str(url).partition("://")[0].lower() not in AMQP_SCHEMES:
        return
    options = dict(conf.get("broker_transport_options") or {})
    if "confirm_publish" not in options:
        options["confirm_publish"] = True
        conf["broker_transport_options"] = options


def _set_visibility_timeout(app: Celery, conf: Any) -> None:
    """Set the visibility timeout PacificPy owns on ``app`` to cover the declared tasks.

    A value the user set afterwards (any other than the one PacificPy last set) is theirs.
    """
    owned = _VISIBILITY.get(app)
    if owned is None:
        return
    grace, last = owned
    options = dict(conf.get("broker_transport_options") or {})
    current = options.get("visibility_timeout")
    if current is not None and current != last:
        del _VISIBILITY[app]  # the user set it since
        return
    value = visibility_timeout_for(registry.all_specs(), grace)
    if current != value:
        options["visibility_timeout"] = value
        conf["broker_transport_options"] = options
        owned[1] = value


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
        # A quorum queue counts the returns of a message itself (RabbitMQ's header).
        returned = getattr(task.request, "x-delivery-count", None)
        deliveries = returned + 1 if isinstance(returned, int) else None
        deliver(backend, data, redelivered=bool(info.get("redelivered")), deliveries=deliveries)

    # Celery compiles a ``def <__name__>(...)`` to check call signatures: a task named
    # ``send-email`` must still give it an identifier.
    short = spec.name.rpartition(".")[2]
    run.__name__ = short if short.isidentifier() else "task"
    run.__qualname__ = run.__name__
    run.__module__ = getattr(spec.fn, "__module__", __name__)
    run.__doc__ = getattr(spec.fn, "__doc__", None)
    if app.configured:  # else the defaults, applied once it is, count this task
        _set_visibility_timeout(app, app.conf)
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
    signals.worker_ready.connect(_on_worker_ready, weak=False)
    signals.worker_shutdown.connect(_on_worker_shutdown, weak=False)
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
        signals.worker_ready.disconnect(_on_worker_ready)
        signals.worker_shutdown.disconnect(_on_worker_shutdown)
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


def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    # The worker's main process runs the scheduler of periodic tasks (prefork children
    # do not: a thread does not survive the fork, and one per worker is enough).
    backend = backend_for(getattr(sender, "app", None))
    if backend is None:
        return
    from pacificpy.background.backends._celery_workers import on_worker_ready
    from pacificpy.background.scheduler import start_scheduler

    start_scheduler(backend)
    try:
        on_worker_ready(backend, sender)
    except Exception:
        logger.exception("could not register this worker in the worker registry")


def _on_worker_shutdown(sender: Any = None, **_: Any) -> None:
    from pacificpy.background.scheduler import stop_scheduler

    stop_scheduler()
    backend = backend_for(getattr(sender, "app", None))
    if backend is None:
        return
    from pacificpy.background.backends._celery_workers import on_worker_shutdown

    on_worker_shutdown(backend)


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
