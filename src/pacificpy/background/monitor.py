"""Task monitoring: every task's state, kept by the task machinery itself.

The executor calls the ``task_*`` event methods of the configured :class:`TaskMonitor`
(``queued → running → completed | failed | retrying | dead | abandoned``); users call
:func:`record_task_start` / :func:`update_task_status` for tasks that report by hand and
query with ``get_task_monitor().get(id)``, ``.list(...)`` and ``.stats()``.

Where the records live is the monitor's *store*:

* :class:`InMemoryMonitorStore` (the default): this process only, the newest
  ``max_records`` tasks. Events cost well under a microsecond or two each: argument and
  result previews are rendered only when a record is read.
* :class:`~pacificpy.background._monitor_redis.RedisMonitorStore`
  (``configure_task_monitor(redis_url=...)``): shared by web processes and Celery/ARQ
  workers. Events are buffered and written by a background thread in pipelined batches;
  retention is bounded by count and by TTL.
* :class:`NullMonitorStore` (``configure_task_monitor(enabled=False)``): records nothing.

Besides the records, every store keeps cumulative counters (tasks per name and status, a
duration histogram per task name, the user's ``record_metric`` observations and the queues
seen) that :mod:`pacificpy.background.metrics` exposes to Prometheus.
"""

from __future__ import annotations

import abc
import bisect
import dataclasses
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pacificpy.background._preview import (
    PREVIEW_CHARS,
    RESULT_KEEP_BYTES,
    approx_size,
    cap_error,
    cap_traceback,
    is_sensitive,
    preview,
    preview_call,
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

logger = logging.getLogger(__name__)

#: Upper bounds (seconds) of the task duration histogram; ``+Inf`` is implied.
DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip
#: ``stats()`` throughput is the number of tasks finished in this many last seconds / it.
THROUGHPUT_WINDOW = 60.0


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

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (``status`` as its string value)."""
        d = dataclasses.asdict(self)
        d["status"] = self.status.value
        return d


@dataclasses.dataclass
class MetricsSnapshot:
    """Cumulative counters of a store, as :mod:`pacificpy.background.metrics` exposes them.

    Attributes:
        totals: ``(task name, status) -> events``: how many times tasks entered a state.
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


def _labels(labels: Mapping[str, Any]) -> LabelSet:
    return tuple(sorted((str(k), str(v)) for k, v in labels.items()))


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


_UNSET: Any = object()


class _Rec:
    """An in-memory record. Class attributes are the defaults, so an event sets only what
    it changes; previews are rendered from ``env`` / ``value`` when the record is read."""

    id = ""
    name = "?"
    env: TaskEnvelope | None = None
    status = TaskStatus.QUEUED
    attempts = 0
    started_at: float | None = None
    finished_at: float | None = None
    duration: float | None = None
    value: Any = _UNSET
    args_preview: str | None = None
    result_preview: str | None = None
    error: str | None = None
    traceback: str | None = None
    updated_at = 0.0

    def snapshot(self) -> TaskRecord:
        env = self.env
        args_preview = self.args_preview
        if args_preview is None and env is not None:
            args_preview = self.args_preview = preview_call(
                env.args, env.kwargs, task=env.task_name
            )
        result_preview = self.result_preview
        value = self.value
        if value is not _UNSET:
            result_preview = self.result_preview = preview(value)
            self.value = _UNSET  # rendered once; drop the reference
        return TaskRecord(
            id=self.id,
            name=self.name,
            status=self.status,
            queue=env.queue if env is not None else "default",
            attempts=self.attempts,
            enqueued_at=env.enqueued_at if env is not None else None,
            started_at=self.started_at,
            finished_at=self.finished_at,
            duration=self.duration,
            args_preview=args_preview,
            result_preview=result_preview,
            error=self.error,
            traceback=self.traceback,
            parent_id=env.parent_id if env is not None else None,
            updated_at=self.updated_at,
        )


#: Results kept by reference without measuring them.
_SMALL = frozenset({int, float, bool})


def _keep_result(rec: _Rec, value: Any) -> None:
    """Keep ``value`` to render when read, or, past ``RESULT_KEEP_BYTES``, its preview now
    (so the monitor never holds a large result alive)."""
    if approx_size(value, RESULT_KEEP_BYTES) <= RESULT_KEEP_BYTES:
        rec.value = value
    else:
        rec.result_preview = preview(value)
        rec.value = _UNSET


_new_rec: Callable[[type[_Rec]], _Rec] = object.__new__
_bucket = bisect.bisect_left
_now = time.time


class InMemoryMonitorStore(MonitorStore):
    """Records in a dict, the oldest evicted past ``max_records`` so memory stays flat.

    Args:
        max_records: how many tasks to remember (newest kept; evicted in small batches).

    Arguments and results are kept by reference until the record is first read and
    rendered as previews then, so ``.delay()`` never pays for a ``repr``. The events take
    no lock except to bump the cumulative counters.
    """

    def __init__(self, max_records: int = 10_000) -> None:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        self.max_records = max_records
        # Evict in batches of ~1%: one locked pass per batch instead of one per task.
        self._high = max_records + max(1, max_records // 100)
        self._records: dict[str, _Rec] = {}
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, str], int] = {}
        self._durations: dict[str, list[Any]] = {}  # name -> [buckets, sum, count]
        self._user: dict[tuple[str, LabelSet], list[float]] = {}
        self._queues: set[str] = set()

    # -- internals -----------------------------------------------------------------------
    def _new(self, task_id: str, name: str) -> _Rec:
        rec = _new_rec(_Rec)
        rec.id = task_id
        rec.name = name
        records = self._records
        records[task_id] = rec
        if len(records) > self._high:
            self._evict()
        return rec

    def _evict(self) -> None:
        records = self._records
        with self._lock:
            extra = len(records) - self.max_records
            if extra <= 0:
                return
            # Insertion order is age order. Events add records without the lock, so another
            # thread may grow the dict while it is walked (a garbage collection or a
            # finalizer can switch threads mid-walk): then walk it again.
            while True:
                try:
                    victims = list(itertools.islice(records, extra))
                    break
                except RuntimeError:
                    continue
            for task_id in victims:
                records.pop(task_id, None)

    def _count(self, name: str, status: str) -> None:
        key = (name, status)
        with self._lock:
            totals = self._totals
            totals[key] = totals.get(key, 0) + 1

    def _count_duration(self, name: str, status: str, duration: float) -> None:
        key = (name, status)
        index = _bucket(DURATION_BUCKETS, duration)
        with self._lock:
            totals = self._totals
            totals[key] = totals.get(key, 0) + 1
            hist = self._durations.get(name)
            if hist is None:
                hist = self._durations[name] = [[0] * (len(DURATION_BUCKETS) + 1), 0.0, 0]
            hist[0][index] += 1
            hist[1] += duration
            hist[2] += 1

    # -- events --------------------------------------------------------------------------
    def task_queued(self, env: TaskEnvelope) -> None:
        rec = _new_rec(_Rec)
        rec.id = task_id = env.task_id
        rec.name = name = env.task_name
        rec.env = env
        rec.updated_at = env.enqueued_at
        records = self._records
        records[task_id] = rec
        if len(records) > self._high:
            self._evict()
        if env.queue not in self._queues:
            self._queues.add(env.queue)
        key = (name, "queued")
        with self._lock:
            totals = self._totals
            totals[key] = totals.get(key, 0) + 1

    def task_running(self, env: TaskEnvelope) -> None:
        # Started attempts are not counted: Prometheus gets enqueued and finished counts.
        rec = self._records.get(env.task_id) or self._new(env.task_id, env.task_name)
        rec.env = env
        rec.status = TaskStatus.RUNNING
        rec.attempts = env.attempt
        rec.started_at = rec.updated_at = _now()

    def task_completed(self, env: TaskEnvelope, value: Any, duration: float) -> None:
        rec = self._records.get(env.task_id) or self._new(env.task_id, env.task_name)
        rec.status = TaskStatus.COMPLETED
        rec.attempts = env.attempt
        rec.finished_at = rec.updated_at = _now()
        rec.duration = duration
        if value is None or type(value) in _SMALL:
            rec.value = value
        else:
            _keep_result(rec, value)
        if rec.error is not None:
            rec.error = rec.traceback = None
        key = (env.task_name, "completed")
        index = _bucket(DURATION_BUCKETS, duration)
        with self._lock:
            totals = self._totals
            totals[key] = totals.get(key, 0) + 1
            hist = self._durations.get(key[0])
            if hist is None:
                hist = self._durations[key[0]] = [[0] * (len(DURATION_BUCKETS) + 1), 0.0, 0]
            hist[0][index] += 1
            hist[1] += duration
            hist[2] += 1

    def task_failed(
        self, env: TaskEnvelope, error: str, traceback: str | None, duration: float | None
    ) -> None:
        rec = self._records.get(env.task_id) or self._new(env.task_id, env.task_name)
        rec.env = env
        rec.status = TaskStatus.FAILED
        rec.attempts = env.attempt
        rec.finished_at = rec.updated_at = _now()
        rec.duration = duration
        rec.error = cap_error(error)
        rec.traceback = None if traceback is None else cap_traceback(traceback)
        if duration is None:
            self._count(env.task_name, "failed")
        else:
            self._count_duration(env.task_name, "failed", duration)

    def task_retrying(self, env: TaskEnvelope, error: str, delay: float) -> None:
        rec = self._records.get(env.task_id) or self._new(env.task_id, env.task_name)
        rec.env = env
        rec.status = TaskStatus.RETRYING
        rec.attempts = env.attempt
        rec.updated_at = _now()
        rec.error = cap_error(error)
        self._count(env.task_name, "retrying")

    def _final(self, task_id: str, name: str, status: TaskStatus, error: str | None) -> None:
        rec = self._records.get(task_id) or self._new(task_id, name)
        rec.status = status
        rec.finished_at = rec.updated_at = _now()
        if error is not None:
            rec.error = cap_error(error)
        self._count(rec.name, status.value)

    def task_dead(self, task_id: str, name: str | None, error: str) -> None:
        self._final(task_id, name or "?", TaskStatus.DEAD, error)

    def task_abandoned(self, task_id: str, name: str) -> None:
        self._final(task_id, name, TaskStatus.ABANDONED, None)

    def record_start(self, task_id: str, name: str) -> None:
        rec = self._records.get(task_id) or self._new(task_id, name)
        rec.status = TaskStatus.RUNNING
        rec.attempts += 1
        rec.started_at = rec.updated_at = _now()
        rec.finished_at = rec.duration = None

    def update_status(self, task_id: str, status: TaskStatus, result: Any = None) -> None:
        rec = self._records.get(task_id) or self._new(task_id, "?")
        now = _now()
        rec.status = status
        rec.updated_at = now
        if status.is_final:
            rec.finished_at = now
            if rec.started_at is not None:
                rec.duration = now - rec.started_at
        if status in (TaskStatus.FAILED, TaskStatus.DEAD, TaskStatus.RETRYING):
            rec.error = None if result is None else cap_error(str(result))
        elif result is not None:
            _keep_result(rec, result)
        if status is not TaskStatus.RUNNING:
            self._count(rec.name, status.value)

    def record_metric(self, name: str, value: float, labels: LabelSet) -> None:
        key = (name, labels)
        with self._lock:
            entry = self._user.get(key)
            if entry is None:
                self._user[key] = [1, value, value]
            else:
                entry[0] += 1
                entry[1] += value
                entry[2] = value

    # -- queries -------------------------------------------------------------------------
    def get(self, task_id: str) -> TaskRecord | None:
        rec = self._records.get(task_id)
        return rec.snapshot() if rec is not None else None

    def _all(self) -> list[_Rec]:
        return list(self._records.values())

    def list(
        self, status: TaskStatus | None = None, name: str | None = None, limit: int = 100
    ) -> list[TaskRecord]:
        out: list[TaskRecord] = []
        for rec in sorted(self._all(), key=lambda r: r.updated_at, reverse=True):
            if (status is None or rec.status is status) and (name is None or rec.name == name):
                out.append(rec.snapshot())
                if len(out) >= limit:
                    break
        return out

    def rows(self) -> Rows:
        return [(r.name, r.status, r.duration, r.finished_at) for r in self._all()]

    def metrics(self) -> MetricsSnapshot:
        with self._lock:
            return MetricsSnapshot(
                totals=dict(self._totals),
                durations={n: (list(h[0]), h[1], h[2]) for n, h in self._durations.items()},
                user={k: (int(v[0]), v[1], v[2]) for k, v in self._user.items()},
                queues=set(self._queues),
            )


def _quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile of sorted ``values``."""
    if not values:
        return None
    idx = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[idx]


def compute_stats(
    rows: Iterable[tuple[str, TaskStatus, float | None, float | None]],
    now: float | None = None,
    window: float = THROUGHPUT_WINDOW,
) -> dict[str, Any]:
    """``stats()`` from ``(name, status, duration, finished_at)`` rows."""
    now = time.time() if now is None else now
    since = now - window
    counts: dict[str, int] = {s.value: 0 for s in TaskStatus}
    per_name: dict[str, dict[str, Any]] = {}
    recent_total = 0
    total = 0
    for name, status, duration, finished_at in rows:
        total += 1
        counts[status.value] += 1
        entry = per_name.get(name)
        if entry is None:
            entry = per_name[name] = {"counts": {}, "durations": [], "recent": 0}
        entry["counts"][status.value] = entry["counts"].get(status.value, 0) + 1
        if duration is not None:
            entry["durations"].append(duration)
        if finished_at is not None and finished_at >= since:
            entry["recent"] += 1
            recent_total += 1
    tasks: dict[str, dict[str, Any]] = {}
    for name in sorted(per_name):
        entry = per_name[name]
        durs = sorted(entry["durations"])
        tasks[name] = {
            "count": sum(entry["counts"].values()),
            "counts": entry["counts"],
            "p50": _quantile(durs, 0.5),
            "p95": _quantile(durs, 0.95),
            "throughput": entry["recent"] / window,
        }
    return {
        "total": total,
        "counts": counts,
        "throughput": recent_total / window,
        "window": window,
        "tasks": tasks,
    }


class TaskMonitor:
    """Tracks tasks through ``queued → running → completed | failed | retrying | dead``.

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


_monitor: TaskMonitor | None = None
_monitor_lock = threading.Lock()


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
    global _monitor
    if store is None:
        if not enabled:
            store = NullMonitorStore()
        elif redis_url is not None:
            from pacificpy.background._monitor_redis import RedisMonitorStore

            store = RedisMonitorStore(redis_url, max_records=max_records)
        else:
            store = InMemoryMonitorStore(max_records=max_records)
    elif redis_url is not None:
        raise ValueError("pass a store or a redis_url, not both")
    monitor = TaskMonitor(store)
    with _monitor_lock:
        previous, _monitor = _monitor, monitor
    if previous is not None:
        _close_quietly(previous)
    from pacificpy.background import tracing

    tracing.auto_enable()
    return monitor


def _close_quietly(monitor: TaskMonitor) -> None:
    try:
        monitor.close()
    except Exception:
        logger.exception("closing the previous task monitor failed")


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
            _monitor = TaskMonitor()
        return _monitor


def reset_task_monitor() -> None:
    """Close and drop the configured monitor (tests); the next use makes a fresh one."""
    global _monitor
    with _monitor_lock:
        previous, _monitor = _monitor, None
    if previous is not None:
        _close_quietly(previous)


def swap_task_monitor(monitor: TaskMonitor | None) -> TaskMonitor | None:
    """Install ``monitor`` as it is and return the one it replaces, neither closed.

    For code that borrows the monitor for a while and gives it back (the testing helpers
    of :mod:`pacificpy.testing`); ``configure_task_monitor`` is for everything else.
    """
    global _monitor
    with _monitor_lock:
        previous, _monitor = _monitor, monitor
    return previous


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
        from pacificpy.background._monitor_redis import RedisMonitorStore

        return RedisMonitorStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    from pacificpy.background._monitor_redis import RedisMonitorStore
