"""Task monitoring: every task's state, kept by the task machinery itself.

The executor calls the ``task_*`` event methods of the configured :class:`TaskMonitor`;
users call :func:`record_task_start` / :func:`update_task_status` for hand-reported tasks
and query with ``get_task_monitor().get(id)``, ``.list(...)`` and ``.stats()``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from pacificpy.types import TaskStatus

if TYPE_CHECKING:
    from pacificpy.background.task import TaskEnvelope

__all__ = [
    "InMemoryMonitorStore",
    "TaskMonitor",
    "TaskRecord",
    "configure_task_monitor",
    "get_task_monitor",
    "record_metric",
    "record_task_start",
    "reset_task_monitor",
    "update_task_status",
]

logger = logging.getLogger(__name__)

PREVIEW_CHARS = 200


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """A short ``repr`` of ``value`` for display, cut at ``limit`` characters."""
    try:
        text = repr(value)
    except Exception:
        text = f"<unrepresentable {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclasses.dataclass
class TaskRecord:
    """What the monitor knows of one task."""

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
        """JSON-friendly form."""
        d = dataclasses.asdict(self)
        d["status"] = self.status.value
        return d


class InMemoryMonitorStore:
    """Records in a dict, oldest evicted past ``max_records`` so memory stays flat."""

    def __init__(self, max_records: int = 10_000) -> None:
        self.max_records = max_records
        self._records: OrderedDict[str, TaskRecord] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, task_id: str) -> TaskRecord | None:
        return self._records.get(task_id)

    def put(self, record: TaskRecord) -> None:
        with self._lock:
            self._records[record.id] = record
            if len(self._records) > self.max_records:
                self._records.popitem(last=False)

    def all(self) -> list[TaskRecord]:
        with self._lock:
            return list(self._records.values())


class TaskMonitor:
    """Tracks tasks through ``queued → running → completed | failed | retrying | dead``."""

    def __init__(self, store: InMemoryMonitorStore | None = None) -> None:
        self.store = store if store is not None else InMemoryMonitorStore()
        self.metrics: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = {}

    # -- events emitted by the task machinery -------------------------------------------
    def _update(self, task_id: str, name: str, **changes: Any) -> TaskRecord:
        rec = self.store.get(task_id)
        if rec is None:
            rec = TaskRecord(id=task_id, name=name, status=TaskStatus.QUEUED)
        for key, value in changes.items():
            setattr(rec, key, value)
        rec.updated_at = time.time()
        self.store.put(rec)
        return rec

    def task_queued(self, env: TaskEnvelope) -> None:
        self._update(
            env.task_id,
            env.task_name,
            status=TaskStatus.QUEUED,
            queue=env.queue,
            enqueued_at=env.enqueued_at,
            parent_id=env.parent_id,
            args_preview=preview((env.args, env.kwargs)),
        )

    def task_running(self, env: TaskEnvelope) -> None:
        self._update(
            env.task_id,
            env.task_name,
            status=TaskStatus.RUNNING,
            attempts=env.attempt,
            started_at=time.time(),
            queue=env.queue,
            enqueued_at=env.enqueued_at,
            parent_id=env.parent_id,
        )

    def task_completed(self, env: TaskEnvelope, value: Any, duration: float) -> None:
        self._update(
            env.task_id,
            env.task_name,
            status=TaskStatus.COMPLETED,
            attempts=env.attempt,
            finished_at=time.time(),
            duration=duration,
            result_preview=preview(value),
            error=None,
            traceback=None,
        )

    def task_failed(
        self, env: TaskEnvelope, error: str, traceback: str | None, duration: float | None
    ) -> None:
        self._update(
            env.task_id,
            env.task_name,
            status=TaskStatus.FAILED,
            attempts=env.attempt,
            finished_at=time.time(),
            duration=duration,
            error=error,
            traceback=traceback,
        )

    def task_retrying(self, env: TaskEnvelope, error: str, delay: float) -> None:
        self._update(
            env.task_id,
            env.task_name,
            status=TaskStatus.RETRYING,
            attempts=env.attempt,
            error=error,
        )

    def task_dead(self, task_id: str, name: str | None, error: str) -> None:
        self._update(
            task_id, name or "?", status=TaskStatus.DEAD, finished_at=time.time(), error=error
        )

    def task_abandoned(self, task_id: str, name: str) -> None:
        self._update(task_id, name, status=TaskStatus.ABANDONED, finished_at=time.time())

    # -- hand-reported tasks -------------------------------------------------------------
    def record_start(self, task_id: str, name: str) -> None:
        now = time.time()
        rec = self.store.get(task_id)
        attempts = (rec.attempts if rec else 0) + 1
        self._update(task_id, name, status=TaskStatus.RUNNING, started_at=now, attempts=attempts)

    def update_status(self, task_id: str, status: TaskStatus | str, result: Any = None) -> None:
        st = TaskStatus.parse(status)
        rec = self.store.get(task_id)
        name = rec.name if rec else "?"
        changes: dict[str, Any] = {"status": st}
        if st.is_final:
            now = time.time()
            changes["finished_at"] = now
            if rec is not None and rec.started_at is not None:
                changes["duration"] = now - rec.started_at
        if st in (TaskStatus.FAILED, TaskStatus.DEAD, TaskStatus.RETRYING):
            changes["error"] = None if result is None else str(result)
        elif result is not None:
            changes["result_preview"] = preview(result)
        self._update(task_id, name, **changes)

    # -- queries -------------------------------------------------------------------------
    def get(self, task_id: str) -> TaskRecord | None:
        """The record of ``task_id``, or ``None``."""
        return self.store.get(task_id)

    def list(
        self, status: TaskStatus | str | None = None, name: str | None = None, limit: int = 100
    ) -> list[TaskRecord]:
        """Newest first, filtered by status and/or task name."""
        st = TaskStatus.parse(status) if status is not None else None
        out = []
        for rec in sorted(self.store.all(), key=lambda r: r.updated_at, reverse=True):
            if (st is None or rec.status is st) and (name is None or rec.name == name):
                out.append(rec)
                if len(out) >= limit:
                    break
        return out

    def stats(self) -> dict[str, Any]:
        """Counts per status; p50/p95 duration and throughput per task name."""
        counts: dict[str, int] = {s.value: 0 for s in TaskStatus}
        per_name: dict[str, list[float]] = {}
        finished: dict[str, list[float]] = {}
        for rec in self.store.all():
            counts[rec.status.value] += 1
            if rec.duration is not None:
                per_name.setdefault(rec.name, []).append(rec.duration)
            if rec.finished_at is not None:
                finished.setdefault(rec.name, []).append(rec.finished_at)
        tasks: dict[str, dict[str, Any]] = {}
        for name in set(per_name) | set(finished):
            durs = sorted(per_name.get(name, []))
            ends = sorted(finished.get(name, []))
            span = ends[-1] - ends[0] if len(ends) > 1 else 0.0
            tasks[name] = {
                "count": len(ends),
                "p50": _quantile(durs, 0.5),
                "p95": _quantile(durs, 0.95),
                "throughput": (len(ends) - 1) / span if span > 0 else None,
            }
        return {"counts": counts, "tasks": tasks}

    def record_metric(self, name: str, value: float, **labels: Any) -> None:
        key = (name, tuple(sorted((k, str(v)) for k, v in labels.items())))
        self.metrics.setdefault(key, []).append(float(value))


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    idx = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[idx]


_monitor: TaskMonitor | None = None
_monitor_lock = threading.Lock()


def configure_task_monitor(
    store: InMemoryMonitorStore | None = None, *, redis_url: str | None = None
) -> TaskMonitor:
    """Install a fresh monitor (in memory by default) and return it."""
    global _monitor
    if redis_url is not None:
        raise NotImplementedError("the Redis monitor store is not available yet")
    _monitor = TaskMonitor(store)
    return _monitor


def get_task_monitor() -> TaskMonitor:
    """The process's monitor; an in-memory one is created on first use."""
    global _monitor
    mon = _monitor
    if mon is None:
        with _monitor_lock:
            if _monitor is None:
                _monitor = TaskMonitor()
            mon = _monitor
    return mon


def reset_task_monitor() -> None:
    """Drop the configured monitor (tests)."""
    global _monitor
    _monitor = None


def record_task_start(task_id: str, name: str) -> None:
    """Mark ``task_id`` as ``running`` (for tasks that report by hand)."""
    get_task_monitor().record_start(task_id, name)


def update_task_status(task_id: str, status: TaskStatus | str, result: Any = None) -> None:
    """Set ``task_id``'s status, with its result (or error text for failures)."""
    get_task_monitor().update_status(task_id, status, result)


def record_metric(name: str, value: float, **labels: Any) -> None:
    """Record one observation of a user metric, e.g. ``record_metric("task_duration", 1.2)``."""
    get_task_monitor().record_metric(name, value, **labels)
