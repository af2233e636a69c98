"""OpenTelemetry tracing of background tasks (the optional ``otel`` extra).

When tracing is on:

* ``.delay()`` / ``.apply_async()`` write the current trace context (W3C ``traceparent``
  with the globally configured propagator) into the message's ``trace`` field;
* every task run is a span (kind ``CONSUMER``, named after the task) whose parent is that
  context: the request span that enqueued the task, or the span of the parent task for
  chains. The span records the task's id, name, attempt and queue, and its exception.

Tracing switches on:

* explicitly, with :func:`enable_tracing` (optionally with a tracer provider of your own);
* automatically in :func:`~pacificpy.background.monitor.configure_task_monitor`, when
  ``opentelemetry`` is already imported and a real (non-default) global tracer provider is
  set. Set the provider before that call, or call :func:`enable_tracing` yourself.

Workers need it on as well (their module configures it the same way), since the task span
is made where the task runs. Off, it costs nothing: no hook is installed.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pacificpy.background import config
from pacificpy.errors import ConfigurationError

if TYPE_CHECKING:
    from pacificpy.background.task import TaskEnvelope

__all__ = ["disable_tracing", "enable_tracing", "tracing_enabled"]

_tracer: Any = None


def _inject() -> dict[str, str] | None:
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


@contextlib.contextmanager
def _task_span(env: TaskEnvelope) -> Iterator[None]:
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind

    tracer = _tracer
    if tracer is None:  # disabled while this task was starting
        yield
        return
    # An empty carrier extracts an empty context: a task enqueued outside any span is a
    # root span, never a child of whatever happens to be current where it runs.
    parent = propagate.extract(env.trace or {})
    with tracer.start_as_current_span(
        env.task_name,
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={
            "pacificpy.task.id": env.task_id,
            "pacificpy.task.name": env.task_name,
            "pacificpy.task.attempt": env.attempt,
            "pacificpy.task.queue": env.queue,
            "messaging.system": "pacificpy",
            "messaging.destination.name": env.queue,
        },
    ):
        yield


def enable_tracing(tracer_provider: Any = None) -> None:
    """Trace every task run as a span, child of the context active at ``.delay()``.

    Args:
        tracer_provider: the provider to make task spans with; the global one (as set with
            ``opentelemetry.trace.set_tracer_provider``) by default.

    Calling it again replaces the provider; it never installs the hooks twice.

    Raises:
        ConfigurationError: OpenTelemetry is not installed (``pip install -e '.[otel]'``
            in a clone of PacificPy).
    """
    global _tracer
    try:
        from opentelemetry import trace
    except ImportError as exc:
        raise ConfigurationError(
            f"tracing needs OpenTelemetry: pip install -e '.[otel]' in your clone of "
            f"PacificPy ({exc})"
        ) from exc
    from pacificpy import __version__

    _tracer = trace.get_tracer("pacificpy.background", __version__, tracer_provider=tracer_provider)
    if _inject not in config.trace_injectors:
        config.trace_injectors.append(_inject)
    if _task_span not in config.run_wrappers:
        config.run_wrappers.append(_task_span)


@config.resets(__name__, "_tracer")
def disable_tracing() -> None:
    """Remove the tracing hooks (messages carry no trace context, runs make no spans)."""
    global _tracer
    _tracer = None
    with contextlib.suppress(ValueError):
        config.trace_injectors.remove(_inject)
    with contextlib.suppress(ValueError):
        config.run_wrappers.remove(_task_span)


def tracing_enabled() -> bool:
    """True while the tracing hooks are installed."""
    return _tracer is not None


def auto_enable() -> bool:
    """Enable tracing if OpenTelemetry is imported and a real tracer provider is set.

    Never imports OpenTelemetry itself. Returns whether tracing is on.
    """
    if _tracer is not None:
        return True
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return False
    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return False
    enable_tracing()
    return True
