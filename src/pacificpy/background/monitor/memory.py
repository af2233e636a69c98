"""The in-memory monitor store (the default): this process only, the newest tasks."""

from __future__ import annotations

import bisect
import collections
import itertools
import threading
import time
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

#: "No result kept" (a plain ``object()``: not tracked by the garbage collector).
_UNSET: Any = object()

# A record is a flat tuple of atomic values (strings, numbers, None) and the call's own
# arguments, never an object with an instance dict nor the TaskEnvelope: the cyclic
# garbage collector untracks such a tuple once it has seen the arguments tuple untracked
# (nested tuples of tuples take it more passes), so the thousands of kept records cost the
# collections of the hot path little. An event replaces the whole tuple. The status is
# kept as its string value (an enum member is a tracked object); kwargs only when there
# are some (a dict, even an empty one, keeps a tuple tracked).
(
    _NAME,  # task name
    _STATUS,  # TaskStatus value (str)
    _ATTEMPTS,
    _STARTED,
    _FINISHED,
    _DURATION,
    _VALUE,  # the result kept by reference (rendered when read), or _UNSET
    _RESULT,  # the result preview rendered at once (a large result), or None
    _UPDATED,
    _EXTRA,  # None or (error, traceback, progress): rare, so kept apart
    _ARGS,  # the envelope's args (None: no envelope seen), kwargs or None, queue,
    _KWARGS,  # enqueued_at, parent id and task name
    _QUEUE,
    _ENQUEUED,
    _PARENT,
    _TASK,
) = range(16)
#: ``_change`` keys for the fields of ``_EXTRA``.
_ERROR, _TRACE, _PROGRESS = 16, 17, 18

_Rec = tuple[Any, ...]


def _blank(name: str) -> _Rec:
    return (name, "queued", 0, None, None, None, _UNSET, None, 0.0, None,
            None, None, "default", None, None, None)  # fmt: skip


def _env_fields(env: TaskEnvelope) -> dict[int, Any]:
    return {_ARGS: env.args, _KWARGS: env.kwargs or None, _QUEUE: env.queue,
            _ENQUEUED: env.enqueued_at, _PARENT: env.parent_id, _TASK: env.task_name}  # fmt: skip


def _progress_fields(progress: tuple[float, float | None, str | None] | None) -> dict[str, Any]:
    if progress is None:
        return {}
    done, total, message = progress
    return {"progress_done": done, "progress_total": total, "progress_message": message}


#: Results kept by reference without measuring them.
_SMALL = frozenset({int, float, bool})


def _kept(value: Any) -> tuple[Any, str | None]:
    """``(value kept, preview)``: ``value`` itself to render when read, or past
    ``RESULT_KEEP_BYTES`` its preview now (so the monitor never holds a large result alive)."""
    if value is None or type(value) in _SMALL:
        return value, None
    if approx_size(value, RESULT_KEEP_BYTES) <= RESULT_KEEP_BYTES:
        return value, None
    return _UNSET, preview(value)


_bucket = bisect.bisect_left
_upto = bisect.bisect_right
_now = time.time
#: Pending counter entries folded into the counters past this many (or when read).
_FOLD_AT = 1024


class InMemoryMonitorStore(MonitorStore):
    """Records in a dict, the oldest evicted past ``max_records`` so memory stays flat.

    Args:
        max_records: how many tasks to remember (newest kept; evicted in small batches).

    Arguments and results are kept by reference until the record is first read and
    rendered as previews then, so ``.delay()`` never pays for a ``repr``. The frequent
    events take no lock: a record is replaced whole, and the enqueue and completion
    counters are appended to lists that are folded in (under the lock) in batches.
    """

    def __init__(self, max_records: int = 10_000) -> None:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        self.max_records = max_records
        # Evict in batches of ~1%: one locked pass per batch instead of one per task.
        self._high = max_records + max(1, max_records // 100)
        self._records: dict[str, _Rec] = {}
        # task id -> (args, kwargs, args preview, value, result preview): previews rendered
        # by a read, reused while the record still holds the same objects.
        self._rendered: dict[str, tuple[Any, Any, str | None, Any, str | None]] = {}
        self._lock = threading.Lock()
        self._totals: collections.Counter[tuple[str, str]] = collections.Counter()
        self._durations: dict[str, list[Any]] = {}  # name -> [buckets, sum, count]
        self._user: dict[tuple[str, LabelSet], list[float]] = {}
        self._queues: set[str] = set()
        # Not yet counted: task names enqueued, and per name the durations of completions.
        # Appending is atomic; _fold takes the first n entries and deletes exactly those.
        self._queued: list[str] = []
        self._done: dict[str, list[float]] = {}

    # -- internals -----------------------------------------------------------------------
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
            rendered = self._rendered
            for task_id in victims:
                records.pop(task_id, None)
                rendered.pop(task_id, None)
            if len(rendered) > len(records):  # a read raced an eviction: drop strays
                for task_id in [t for t in rendered if t not in records]:
                    rendered.pop(task_id, None)

    def _fold(self) -> None:
        """Count the pending enqueues and completions (under the lock)."""
        with self._lock:
            totals = self._totals
            queued = self._queued
            n = len(queued)
            if n:
                names = queued[:n]
                del queued[:n]
                for name, events in collections.Counter(names).items():
                    totals[(name, "queued")] += events
            for name, done in list(self._done.items()):
                n = len(done)
                if not n:
                    continue
                chunk = done[:n]
                del done[:n]
                totals[(name, "completed")] += n
                hist = self._durations.get(name)
                if hist is None:
                    hist = self._durations[name] = [[0] * (len(DURATION_BUCKETS) + 1), 0.0, 0]
                hist[1] += sum(chunk)
                hist[2] += n
                # Bucket i holds bound[i-1] < d <= bound[i] (bisect_left on the bounds).
                chunk.sort()
                buckets = hist[0]
                below = 0
                for i, bound in enumerate(DURATION_BUCKETS):
                    upto = _upto(chunk, bound, below)
                    buckets[i] += upto - below
                    below = upto
                buckets[-1] += n - below

    def _count(self, name: str, status: str) -> None:
        with self._lock:
            self._totals[(name, status)] += 1

    def _count_duration(self, name: str, status: str, duration: float) -> None:
        index = _bucket(DURATION_BUCKETS, duration)
        with self._lock:
            self._totals[(name, status)] += 1
            hist = self._durations.get(name)
            if hist is None:
                hist = self._durations[name] = [[0] * (len(DURATION_BUCKETS) + 1), 0.0, 0]
            hist[0][index] += 1
            hist[1] += duration
            hist[2] += 1

    def _change(self, task_id: str, name: str, changes: dict[int, Any]) -> _Rec:
        """Replace the record of ``task_id`` (a blank one named ``name`` if none) with
        ``changes`` applied (field index -> value); returns the new record."""
        records = self._records
        old = records.get(task_id)
        fields = list(old if old is not None else _blank(name))
        extra = list(fields[_EXTRA] or (None, None, None))
        for index, value in changes.items():
            if index >= _ERROR:
                extra[index - _ERROR] = value
            else:
                fields[index] = value
        fields[_EXTRA] = None if extra == [None, None, None] else tuple(extra)
        rec = records[task_id] = tuple(fields)
        if old is None and len(records) > self._high:
            self._evict()
        return rec

    # -- events --------------------------------------------------------------------------
    def task_queued(self, env: TaskEnvelope) -> None:
        task_id = env.task_id
        name = env.task_name
        queue = env.queue
        at = env.enqueued_at
        records = self._records
        records[task_id] = (name, "queued", 0, None, None, None, _UNSET, None, at, None,
                            env.args, env.kwargs or None, queue, at, env.parent_id,
                            name)  # fmt: skip
        if len(records) > self._high:
            self._evict()
        if queue not in self._queues:
            self._queues.add(queue)
        queued = self._queued
        queued.append(name)
        if len(queued) > _FOLD_AT:
            self._fold()

    def task_running(self, env: TaskEnvelope) -> None:
        # Started attempts are not counted: Prometheus gets enqueued and finished counts.
        task_id = env.task_id
        now = _now()
        records = self._records
        rec = records.get(task_id)
        if rec is None:
            records[task_id] = (env.task_name, "running", env.attempt, now, None, None, _UNSET,
                                None, now, None, env.args, env.kwargs or None, env.queue,
                                env.enqueued_at, env.parent_id, env.task_name)  # fmt: skip
            if len(records) > self._high:
                self._evict()
            return
        records[task_id] = (rec[0], "running", env.attempt, now, rec[4], rec[5], rec[6], rec[7],
                            now, rec[9], env.args, env.kwargs or None, env.queue,
                            env.enqueued_at, env.parent_id, env.task_name)  # fmt: skip

    def task_completed(self, env: TaskEnvelope, value: Any, duration: float) -> None:
        task_id = env.task_id
        name = env.task_name
        if value is None or type(value) in _SMALL:
            result = None
        else:
            value, result = _kept(value)
        now = _now()
        records = self._records
        rec = records.get(task_id)
        if rec is None:
            records[task_id] = (name, "completed", env.attempt, None, now, duration, value,
                                result, now, None, None, None, "default", None, None,
                                None)  # fmt: skip
            if len(records) > self._high:
                self._evict()
        else:
            extra = rec[9]
            if extra is not None:  # a completion clears the error of a failed attempt
                extra = None if extra[2] is None else (None, None, extra[2])
            records[task_id] = (rec[0], "completed", env.attempt, rec[3], now, duration, value,
                                result, now, extra, rec[10], rec[11], rec[12], rec[13], rec[14],
                                rec[15])  # fmt: skip
        done = self._done.get(name)
        if done is None:
            done = self._done.setdefault(name, [])
        done.append(duration)
        if len(done) > _FOLD_AT:
            self._fold()

    def task_failed(
        self, env: TaskEnvelope, error: str, traceback: str | None, duration: float | None
    ) -> None:
        now = _now()
        self._change(env.task_id, env.task_name, {
            _STATUS: "failed", _ATTEMPTS: env.attempt, _FINISHED: now, _UPDATED: now,
            _DURATION: duration, _ERROR: cap_error(error),
            _TRACE: None if traceback is None else cap_traceback(traceback), **_env_fields(env),
        })  # fmt: skip
        if duration is None:
            self._count(env.task_name, "failed")
        else:
            self._count_duration(env.task_name, "failed", duration)

    def task_retrying(self, env: TaskEnvelope, error: str, delay: float) -> None:
        self._change(env.task_id, env.task_name, {
            _STATUS: "retrying", _ATTEMPTS: env.attempt, _UPDATED: _now(),
            _ERROR: cap_error(error), **_env_fields(env),
        })  # fmt: skip
        self._count(env.task_name, "retrying")

    def _final(self, task_id: str, name: str, status: TaskStatus, error: str | None) -> None:
        now = _now()
        changes: dict[int, Any] = {_STATUS: status.value, _FINISHED: now, _UPDATED: now}
        if error is not None:
            changes[_ERROR] = cap_error(error)
        rec = self._change(task_id, name, changes)
        self._count(rec[_NAME], status.value)

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
        self._change(ctx.id, ctx.name, {_PROGRESS: (done, total, message), _UPDATED: _now()})

    def record_start(self, task_id: str, name: str) -> None:
        now = _now()
        old = self._records.get(task_id)
        attempts = (old[_ATTEMPTS] if old is not None else 0) + 1
        self._change(task_id, name, {
            _STATUS: "running", _ATTEMPTS: attempts, _STARTED: now, _UPDATED: now,
            _FINISHED: None, _DURATION: None,
        })  # fmt: skip

    def update_status(self, task_id: str, status: TaskStatus, result: Any = None) -> None:
        now = _now()
        old = self._records.get(task_id)
        changes: dict[int, Any] = {_STATUS: status.value, _UPDATED: now}
        if status.is_final:
            changes[_FINISHED] = now
            started = old[_STARTED] if old is not None else None
            if started is not None:
                changes[_DURATION] = now - started
        if status in (TaskStatus.FAILED, TaskStatus.DEAD, TaskStatus.RETRYING):
            changes[_ERROR] = None if result is None else cap_error(str(result))
        elif result is not None:
            changes[_VALUE], changes[_RESULT] = _kept(result)
        rec = self._change(task_id, "?", changes)
        if status is not TaskStatus.RUNNING:
            self._count(rec[_NAME], status.value)

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
    def _snapshot(self, task_id: str, rec: _Rec) -> TaskRecord:
        value = rec[_VALUE]
        args, kwargs, queue, enqueued_at, parent_id, task = rec[_ARGS:]
        cached = self._rendered.get(task_id)
        if cached is not None and cached[0] is args and cached[1] is kwargs:
            args_preview = cached[2]
        else:
            args_preview = None if args is None else preview_call(args, kwargs or {}, task=task)
        if value is _UNSET:
            result_preview = rec[_RESULT]
        elif cached is not None and cached[3] is value and cached[4] is not None:
            result_preview = cached[4]
        else:
            result_preview = preview(value)
        self._rendered[task_id] = (args, kwargs, args_preview, value, result_preview)
        error, trace, progress = rec[_EXTRA] or (None, None, None)
        return TaskRecord(
            id=task_id,
            name=rec[_NAME],
            status=TaskStatus(rec[_STATUS]),
            queue=queue,
            attempts=rec[_ATTEMPTS],
            enqueued_at=enqueued_at,
            started_at=rec[_STARTED],
            finished_at=rec[_FINISHED],
            duration=rec[_DURATION],
            args_preview=args_preview,
            result_preview=result_preview,
            error=error,
            traceback=trace,
            parent_id=parent_id,
            updated_at=rec[_UPDATED],
            **_progress_fields(progress),
        )

    def get(self, task_id: str) -> TaskRecord | None:
        rec = self._records.get(task_id)
        return self._snapshot(task_id, rec) if rec is not None else None

    def list(
        self, status: TaskStatus | None = None, name: str | None = None, limit: int = 100
    ) -> list[TaskRecord]:
        out: list[TaskRecord] = []
        wanted = None if status is None else status.value
        items = sorted(self._records.items(), key=lambda kv: kv[1][_UPDATED], reverse=True)
        for task_id, rec in items:
            if (wanted is None or rec[_STATUS] == wanted) and (name is None or rec[_NAME] == name):
                out.append(self._snapshot(task_id, rec))
                if len(out) >= limit:
                    break
        return out

    def rows(self) -> Rows:
        status = TaskStatus
        return [(r[0], status(r[1]), r[5], r[4]) for r in list(self._records.values())]

    def metrics(self) -> MetricsSnapshot:
        self._fold()
        with self._lock:
            return MetricsSnapshot(
                totals=dict(self._totals),
                durations={n: (list(h[0]), h[1], h[2]) for n, h in self._durations.items()},
                user={k: (int(v[0]), v[1], v[2]) for k, v in self._user.items()},
                queues=set(self._queues),
            )
