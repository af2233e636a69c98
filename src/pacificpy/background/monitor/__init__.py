"""Task monitoring: every task's state, kept by the task machinery itself.

The executor calls the ``task_*`` event methods of the configured :class:`TaskMonitor`
(``queued → running → completed | failed | retrying | dead | abandoned``); users call
:func:`record_task_start` / :func:`update_task_status` for tasks that report by hand and
query with ``get_task_monitor().get(id)``, ``.list(...)`` and ``.stats()``.

Where the records live is the monitor's *store* (the contract: :mod:`.store`):

* :class:`InMemoryMonitorStore` (:mod:`.memory`, the default): this process only, the
  newest ``max_records`` tasks. Events cost well under a microsecond or two each:
  argument and result previews are rendered only when a record is read.
* :class:`RedisMonitorStore` (:mod:`.redis`, ``configure_task_monitor(redis_url=...)``):
  shared by web processes and Celery/ARQ workers. Events are buffered and written by a
  background thread in pipelined batches; retention is bounded by count and by TTL.
* :class:`NullMonitorStore` (``configure_task_monitor(enabled=False)``): records nothing.

Besides the records, every store keeps cumulative counters (tasks per name and status, a
duration histogram per task name, the user's ``record_metric`` observations and the queues
seen) that the ``/metrics`` endpoint exposes to Prometheus. Previews and the redaction of
secrets are :mod:`.previews`; ``stats()`` is computed by :mod:`.stats`. The configured
monitor itself is held by :mod:`pacificpy.background.config`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pacificpy.background.config import (
    get_task_monitor,
    replace_task_monitor,
    reset_task_monitor,
    swap_task_monitor,
)
from pacificpy.background.monitor.memory import InMemoryMonitorStore
from pacificpy.background.monitor.previews import PREVIEW_CHARS, is_sensitive, preview, preview_call
from pacificpy.background.monitor.stats import compute_stats
from pacificpy.background.monitor.store import (
    DURATION_BUCKETS,
    LabelSet,
    MetricsSnapshot,
    MonitorStore,
    NullMonitorStore,
    TaskRecord,
)
from pacificpy.types import TaskStatus

if TYPE_CHECKING:
    from pacificpy.background.task import TaskEnvelope

__all__ = [
    "DURATION_BUCKETS",
    "PREVIEW_CHARS",
    "InMemoryMonitorStore",
    "MetricsSnapshot",
    "MonitorStore",
    "NullMonitorStore",
    "RedisMonitorStore",
    "TaskMonitor",
    "TaskRecord",
    "configure_task_monitor",
    "get_task_monitor",
    "is_sensitive",
    "preview",
    "preview_call",
    "record_metric",
    "record_task_start",
    "reset_task_monitor",
    "swap_task_monitor",
    "update_task_status",
]


def _labels(labels: Mapping[str, Any]) -> LabelSet:
    return tuple(sorted((str(k), str(v)) for k, v in labels.items()))


class TaskMonitor:
    """Tracks tasks through ``queued → running → completed | failed | retrying | dead |
    cancelled``.

    The event methods (``task_queued``, ``task_running``, ``task_completed``,
    ``task_failed``, ``task_retrying``, ``task_dead``, ``task_abandoned``) are the store's
    own, bound here so the hot path pays for one call only.

    Args:
        store: where records and counters live; a fresh :class:`InMemoryMonitorStore` by
            default.
    """

    def __init__(self, store: MonitorStore | None = None) -> None:
        self.store: MonitorStore = store if store is not None else InMemoryMonitorStore()
        s = self.store
        self.task_queued: Callable[[TaskEnvelope], None] = s.task_queued
        self.task_running: Callable[[TaskEnvelope], None] = s.task_running
        self.task_completed: Callable[[TaskEnvelope, Any, float], None] = s.task_completed
        self.task_failed: Callable[[TaskEnvelope, str, str | None, float | None], None] = (
            s.task_failed
        )
        self.task_retrying: Callable[[TaskEnvelope, str, float], None] = s.task_retrying
        self.task_dead: Callable[[str, str | None, str], None] = s.task_dead
        self.task_abandoned: Callable[[str, str], None] = s.task_abandoned
        self.task_throttled: Callable[[TaskEnvelope, str], None] = s.task_throttled
        self.task_cancelled: Callable[[str, str | None], None] = s.task_cancelled
        self.task_progress: Callable[[Any, float, float | None, str | None], None] = s.task_progress

    def __repr__(self) -> str:
        return f"<TaskMonitor store={type(self.store).__name__}>"

    @property
    def enabled(self) -> bool:
        """False when monitoring is off (``configure_task_monitor(enabled=False)``)."""
        return self.store.enabled

    # -- hand-reported tasks -------------------------------------------------------------
    def record_start(self, task_id: str, name: str) -> None:
        """Mark ``task_id`` as ``running`` (one more attempt)."""
        self.store.record_start(task_id, name)

    def update_status(self, task_id: str, status: TaskStatus | str, result: Any = None) -> None:
        """Set ``task_id``'s status; ``result`` is the value, or the error for failures.

        Raises:
            ValueError: ``status`` is not a task status.
        """
        self.store.update_status(task_id, TaskStatus.parse(status), result)

    def record_metric(self, name: str, value: float, **labels: Any) -> None:
        """Record one observation of the user metric ``name`` (exposed at ``/metrics``)."""
        self.store.record_metric(name, float(value), _labels(labels) if labels else ())

    # -- queries -------------------------------------------------------------------------
    def get(self, task_id: str) -> TaskRecord | None:
        """The record of ``task_id``, or ``None``."""
        return self.store.get(task_id)

    def list(
        self, status: TaskStatus | str | None = None, name: str | None = None, limit: int = 100
    ) -> list[TaskRecord]:
        """The newest ``limit`` records (by last update), filtered by status and/or name."""
        st = TaskStatus.parse(status) if status is not None else None
        return self.store.list(st, name, limit)

    def stats(self) -> dict[str, Any]:
        """Counts per status; p50/p95 duration and throughput per task name.

        Returns a dict: ``total`` (records retained), ``counts`` (status -> records),
        ``throughput`` (tasks finished per second over the last ``window`` = 60 s) and
        ``tasks``: task name -> ``count``, ``counts`` (per status), ``p50`` and ``p95``
        (seconds, over retained records with a duration; ``None`` without any) and
        ``throughput``.
        """
        return compute_stats(self.store.rows())

    def metrics(self) -> MetricsSnapshot:
        """The cumulative counters behind ``/metrics``."""
        return self.store.metrics()

    def flush(self) -> None:
        """Write buffered events now (the Redis store buffers; others write at once)."""
        self.store.flush()

    def close(self) -> None:
        """Flush and release the store's resources."""
        self.store.close()


def configure_task_monitor(
    store: MonitorStore | None = None,
    *,
    redis_url: str | None = None,
    enabled: bool = True,
    max_records: int = 10_000,
) -> TaskMonitor:
    """Install a fresh monitor and return it.

    Args:
        store: the store to use; by default a fresh in-memory store.
        redis_url: use a :class:`RedisMonitorStore` at this URL instead, shared by every
            process (web and workers) configured with it.
        enabled: ``False`` installs a monitor that records nothing (the cheapest setting).
        max_records: how many tasks the default stores remember.

    The previous monitor is closed (its buffered events are written first). When an
    OpenTelemetry tracer provider is already set, tracing is switched on too (see
    :mod:`pacificpy.background.tracing`).
    """
    if store is None:
        if not enabled:
            store = NullMonitorStore()
        elif redis_url is not None:
            from pacificpy.background.monitor.redis import RedisMonitorStore

            store = RedisMonitorStore(redis_url, max_records=max_records)
        else:
            store = InMemoryMonitorStore(max_records=max_records)
    elif redis_url is not None:
        raise ValueError("pass a store or a redis_url, not both")
    monitor = TaskMonitor(store)
    replace_task_monitor(monitor)
    from pacificpy.background import tracing

    tracing.auto_enable()
    return monitor


def record_task_start(task_id: str, name: str) -> None:
    """Mark ``task_id`` as ``running`` (for tasks that report by hand)."""
    get_task_monitor().record_start(task_id, name)


def update_task_status(task_id: str, status: TaskStatus | str, result: Any = None) -> None:
    """Set ``task_id``'s status, with its result (or error text for failures)."""
    get_task_monitor().update_status(task_id, status, result)


def record_metric(name: str, value: float, **labels: Any) -> None:
    """Record one observation of a user metric, e.g. ``record_metric("task_duration", 1.2)``.

    Every metric is exposed at ``/metrics`` as a summary (``<name>_count``, ``<name>_sum``)
    with the given labels; see :mod:`pacificpy.background.metrics`.
    """
    get_task_monitor().record_metric(name, value, **labels)


def __getattr__(name: str) -> Any:
    # The Redis store lives in its own module and imports redis-py only when used.
    if name == "RedisMonitorStore":
        from pacificpy.background.monitor.redis import RedisMonitorStore

        return RedisMonitorStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    from pacificpy.background.monitor.redis import RedisMonitorStore
