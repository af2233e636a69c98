"""The in-memory monitor store (the default): this process only, the newest tasks."""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pacificpy.background.monitor.previews import (
    RESULT_KEEP_BYTES,
    approx_size,
    cap_error,
    cap_traceback,
    preview,
    preview_call,
)
from pacificpy.background.monitor.store import (
    DURATION_BUCKETS,
    LabelSet,
    MetricsSnapshot,
    MonitorStore,
    Rows,
    TaskRecord,
)
from pacificpy.types import TaskStatus

if TYPE_CHECKING:
    from pacificpy.background.task import TaskContext, TaskEnvelope

__all__ = ["InMemoryMonitorStore"]

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
    progress: tuple[float, float | None, str | None] | None = None

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
            **_progress_fields(self.progress),
        )


def _progress_fields(progress: tuple[float, float | None, str | None] | None) -> dict[str, Any]:
    if progress is None:
        return {}
    done, total, message = progress
    return {"progress_done": done, "progress_total": total, "progress_message": message}


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

    def task_throttled(self, env: TaskEnvelope, limit: str) -> None:
        self._count(env.task_name, "throttled")

    def task_cancelled(self, task_id: str, name: str | None) -> None:
        self._final(task_id, name or "?", TaskStatus.CANCELLED, None)

    def task_progress(
        self, ctx: TaskContext, done: float, total: float | None, message: str | None
    ) -> None:
        rec = self._records.get(ctx.id) or self._new(ctx.id, ctx.name)
        rec.progress = (done, total, message)
        rec.updated_at = _now()

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
