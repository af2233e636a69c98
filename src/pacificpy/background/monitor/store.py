"""The monitor's store contract: what a store records, keeps and answers.

:class:`MonitorStore` is the contract every store implements (the task events, the
hand-reporting calls, the queries); :class:`TaskRecord` and :class:`MetricsSnapshot` are
what it answers. :class:`NullMonitorStore` is the store that records nothing. The stores
that do record are :mod:`.memory` and :mod:`.redis`.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, Any

from pacificpy.types import TaskStatus

if TYPE_CHECKING:
    from pacificpy.background.task import TaskContext, TaskEnvelope

__all__ = [
    "DURATION_BUCKETS",
    "LabelSet",
    "MetricsSnapshot",
    "MonitorStore",
    "NullMonitorStore",
    "Rows",
    "TaskRecord",
]

#: Upper bounds (seconds) of the task duration histogram; ``+Inf`` is implied.
DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip


@dataclasses.dataclass
class TaskRecord:
    """What the monitor knows of one task (a snapshot; changing it changes nothing)."""

    id: str
    name: str
    status: TaskStatus
    queue: str = "default"
    attempts: int = 0
    enqueued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    duration: float | None = None
    args_preview: str | None = None
    result_preview: str | None = None
    error: str | None = None
    traceback: str | None = None
    parent_id: str | None = None
    updated_at: float = 0.0
    #: The latest ``current_task().set_progress(done, total, message)`` (None: none yet).
    progress_done: float | None = None
    progress_total: float | None = None
    progress_message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (``status`` as its string value)."""
        d = dataclasses.asdict(self)
        d["status"] = self.status.value
        return d


@dataclasses.dataclass
class MetricsSnapshot:
    """Cumulative counters of a store, as :mod:`pacificpy.background.metrics` exposes them.

    Attributes:
        totals: ``(task name, status) -> events``: how many times tasks entered a state;
            status ``throttled`` counts starts a flow limit held back.
        durations: ``task name -> (bucket counts, sum, count)``; the bucket counts are per
            bucket of :data:`DURATION_BUCKETS` plus a last one for ``+Inf`` (not
            cumulative).
        user: ``(metric name, ((label, value), ...)) -> (count, sum, last value)``.
        queues: the queues tasks were enqueued to.
    """

    totals: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    durations: dict[str, tuple[list[int], float, int]] = dataclasses.field(default_factory=dict)
    user: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[int, float, float]] = (
        dataclasses.field(default_factory=dict)
    )
    queues: set[str] = dataclasses.field(default_factory=set)


LabelSet = tuple[tuple[str, str], ...]
#: ``(name, status, duration, finished_at)`` of retained records, for ``stats()``.
Rows = list[tuple[str, TaskStatus, float | None, float | None]]


class MonitorStore(abc.ABC):
    """Where a :class:`TaskMonitor` keeps records and counters.

    A store implements the task events (called by the task machinery on every backend),
    the hand-reporting calls and the queries. Event methods must be cheap and must never
    raise for a healthy store: they run on the hot path of every ``.delay()`` and task run.
    """

    #: False only for :class:`NullMonitorStore`.
    enabled: bool = True

    # -- events --------------------------------------------------------------------------
    @abc.abstractmethod
    def task_queued(self, env: TaskEnvelope) -> None:
        """``env`` was handed to a backend (or is about to be)."""

    @abc.abstractmethod
    def task_running(self, env: TaskEnvelope) -> None:
        """An attempt of ``env`` started."""

    @abc.abstractmethod
    def task_completed(self, env: TaskEnvelope, value: Any, duration: float) -> None:
        """The attempt returned ``value`` after ``duration`` seconds."""

    @abc.abstractmethod
    def task_failed(
        self, env: TaskEnvelope, error: str, traceback: str | None, duration: float | None
    ) -> None:
        """The task failed for good (its last attempt raised, or it was never enqueued)."""

    @abc.abstractmethod
    def task_retrying(self, env: TaskEnvelope, error: str, delay: float) -> None:
        """The attempt failed and the task will run again after ``delay`` seconds."""

    @abc.abstractmethod
    def task_dead(self, task_id: str, name: str | None, error: str) -> None:
        """The message could not be run at all (unknown task, rejected, poison)."""

    @abc.abstractmethod
    def task_abandoned(self, task_id: str, name: str) -> None:
        """The task was still queued or running when its executor shut down."""

    def task_throttled(self, env: TaskEnvelope, limit: str) -> None:  # noqa: B027
        """A start of ``env`` was held back by its ``limit`` (``"concurrency"`` or
        ``"rate_limit"``) and deferred; the record stays as it was. Counted only."""

    def task_cancelled(self, task_id: str, name: str | None) -> None:
        """``handle.cancel()`` stopped the task (recorded once, by the canceller).

        By default a hand-reported status change; the stores that order events override it.
        """
        self.update_status(task_id, TaskStatus.CANCELLED)

    def task_progress(  # noqa: B027 - optional: a store may keep no progress
        self, ctx: TaskContext, done: float, total: float | None, message: str | None
    ) -> None:
        """The running task reported its progress (``current_task().set_progress``)."""

    @abc.abstractmethod
    def record_start(self, task_id: str, name: str) -> None:
        """Hand-reported start: ``running``, one more attempt."""

    @abc.abstractmethod
    def update_status(self, task_id: str, status: TaskStatus, result: Any = None) -> None:
        """Hand-reported status change (``result`` is the error text for failures)."""

    @abc.abstractmethod
    def record_metric(self, name: str, value: float, labels: LabelSet) -> None:
        """One observation of a user metric."""

    # -- queries -------------------------------------------------------------------------
    @abc.abstractmethod
    def get(self, task_id: str) -> TaskRecord | None:
        """The record of ``task_id``, or ``None``."""

    @abc.abstractmethod
    def list(
        self, status: TaskStatus | None = None, name: str | None = None, limit: int = 100
    ) -> list[TaskRecord]:
        """Newest first (by last update), filtered by status and/or task name."""

    @abc.abstractmethod
    def rows(self) -> Rows:
        """``(name, status, duration, finished_at)`` of every retained record."""

    @abc.abstractmethod
    def metrics(self) -> MetricsSnapshot:
        """The cumulative counters."""

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Write buffered events now (stores that buffer)."""

    def ping(self) -> None:  # noqa: B027 - a store in this process always answers
        """One round trip to where the records live (health checks); raises if it fails."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release resources; the store is not used afterwards."""


class NullMonitorStore(MonitorStore):
    """Records nothing: every event is a no-op and every query answers empty.

    Installed by ``configure_task_monitor(enabled=False)``. Note that without records,
    ``handle.status()`` of backends that ask the monitor answers ``None``.
    """

    enabled = False

    def _noop(self, *args: Any) -> None:
        return None

    task_queued = task_running = task_completed = task_failed = _noop  # type: ignore[assignment]
    task_retrying = task_dead = task_abandoned = record_start = _noop  # type: ignore[assignment]
    task_cancelled = task_progress = _noop  # type: ignore[assignment]
    update_status = record_metric = _noop  # type: ignore[assignment]

    def get(self, task_id: str) -> TaskRecord | None:
        return None

    def list(
        self, status: TaskStatus | None = None, name: str | None = None, limit: int = 100
    ) -> list[TaskRecord]:
        return []

    def rows(self) -> Rows:
        return []

    def metrics(self) -> MetricsSnapshot:
        return MetricsSnapshot()
