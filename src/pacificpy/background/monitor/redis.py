"""The Redis monitor store: one view of every task, shared by web processes and workers.

Events are appended to an in-process buffer (a deque append: the hot path never waits
for Redis) and a background thread writes them in windows: a task's events within one
window fold into one record write, and the writes go out 500 to a Lua call (one JSON
argument). Queries write the buffer first, so a process always reads
its own events.

Keys (``P`` is the prefix, ``pacificpy`` by default)::

    P:mon:t:<id>    hash  one task's record; expires ``ttl`` seconds after its last event
    P:mon:index     zset  task id -> last update time; trimmed to ``max_records``
    P:mon:totals    hash  "<name>\\x1f<status>" -> events (tasks entering that state)
    P:mon:dur       hash  "<name>\\x1f<bucket>" / "<name>\\x1fsum" / "<name>\\x1fcount"
    P:mon:metrics   hash  "<metric>\\x1f<labels JSON>\\x1f(c|s|l)" -> count / sum / last
    P:mon:queues    set   queues tasks were enqueued to

Events from different processes may arrive out of order (the web process's ``queued``
after the worker's ``completed``). Each record keeps an ordering key, (life, attempt,
phase), where the life is the time the task was enqueued (a requeued dead letter starts
a new life); an event older than the record's key is counted but does not overwrite it.
"""

from __future__ import annotations

import atexit
import bisect
import collections
import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

import orjson

from pacificpy.background._jsonvalue import dumps_value
from pacificpy.background.backends.redis.clients import RedisClients
from pacificpy.background.monitor.previews import cap_error, cap_traceback, preview, preview_call
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

__all__ = ["RedisMonitorStore"]

logger = logging.getLogger("pacificpy.background.monitor")

_SEP = "\x1f"
_PHASE_QUEUED, _PHASE_RUNNING, _PHASE_DONE = "0", "1", "2"
#: Record writes per script call (a longer call would hold up every other Redis client).
_BATCH = 500
#: Events folded together per flush: a task's queued, running and completed events fold
#: into one write only if they fall in one window, and a busy process interleaves many
#: tasks' events (with one worker thread behind a fast producer, a task's completion comes
#: some 500 events after its enqueue).
_WINDOW = 5000
_FOLDABLE = frozenset({"queued", "running", "completed", "failed", "retrying"})
#: Events folded into a pending write of the same task without taking its ordering key.
_MERGED = frozenset({"progress"})

# Every live store, for the fork hook (weak: a store dropped is forgotten).
_stores: weakref.WeakSet[RedisMonitorStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_stores):
        store._reset_after_fork()


# Installed once, with the module: a forked child starts its stores' threads afresh.
os.register_at_fork(after_in_child=_after_fork_in_child)


def _flush_at_exit(ref: weakref.ref[RedisMonitorStore]) -> None:
    store = ref()
    if store is not None and not store._closed:
        try:
            store.flush()
        except Exception:
            logger.exception("task monitor: flush at exit failed")


_dumps = orjson.dumps
_bucket = bisect.bisect_left


def _r(value: float) -> str:
    """``repr(value)``, about five times faster: between 1e-4 and 1e16 (event times, most
    durations) orjson writes exactly the shortest digits ``repr`` writes."""
    if 1e-4 <= value < 1e16:
        return _dumps(value).decode()
    return repr(value)


def _f(value: float | None) -> str:
    return "" if value is None else _r(value)


def _flat(head: list[Any], fields: dict[str, Any]) -> list[Any]:
    """One event of the batch script: ``head`` then the fields as name, value pairs, every
    float written as its ``repr`` (the event time and the enqueue time once each: writing
    a float is the costliest step of a write)."""
    now = head[1]
    now_s = _r(now)
    life = head[2]
    life_s = "" if life is None else now_s if life is now else _r(life)
    out = [head[0], now_s, life_s, head[3], head[4], head[5], head[6], head[7]]
    for field, value in fields.items():
        if type(value) is float:
            value = now_s if value is now else life_s if value is life else _r(value)
        out += (field, value)
    return out


def _opt_float(raw: bytes | None) -> float | None:
    return float(raw) if raw else None


def _opt_str(raw: bytes | None) -> str | None:
    return raw.decode("utf-8", "replace") if raw else None


class RedisMonitorStore(MonitorStore):
    """Task records and counters in Redis, shared by every process using the same URL.

    Args:
        url: the Redis URL (``redis://host:port/db``).
        prefix: key prefix.
        max_records: the newest this many tasks are kept (older ones are trimmed).
        ttl: seconds a record lives after its last event.
        max_buffer: events held in memory while Redis is slow or down; past it the oldest
            are dropped (with a warning): monitoring never holds up a task.

    Redis errors are logged and the affected events dropped; task outcomes never depend on
    the monitor.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "pacificpy",
        max_records: int = 10_000,
        ttl: float = 86_400.0,
        max_buffer: int = 100_000,
    ) -> None:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        self.url = url
        self._clients = RedisClients(url)
        self.prefix = prefix
        self.max_records = max_records
        self.ttl = int(ttl)
        self.max_buffer = max_buffer
        self._k_index = f"{prefix}:mon:index"
        self._k_totals = f"{prefix}:mon:totals"
        self._k_dur = f"{prefix}:mon:dur"
        self._k_metrics = f"{prefix}:mon:metrics"
        self._k_queues = f"{prefix}:mon:queues"
        self._k_task = f"{prefix}:mon:t:"
        self._closed = False
        self._dropped = 0
        self._atexit_registered = False
        self._init_runtime()
        _stores.add(self)

    def __repr__(self) -> str:
        return f"<RedisMonitorStore {self.url} prefix={self.prefix!r}>"

    def _init_runtime(self) -> None:
        self._buf: collections.deque[tuple[Any, ...]] = collections.deque()
        self._wake = threading.Event()
        self._flush_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _reset_after_fork(self) -> None:
        # The parent writes its own buffer; the child starts empty with its own
        # connection and flusher thread (threads do not survive fork).
        self._init_runtime()

    # -- client --------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The sync redis-py client (``redis.Redis``) of this process."""
        return self._clients.sync

    def ping(self) -> None:
        self.client.ping()

    # -- buffering -----------------------------------------------------------------------
    def _push(self, item: tuple[Any, ...]) -> None:
        buf = self._buf
        buf.append(item)
        if len(buf) == 1:
            if self._thread is None:
                self._start()
            self._wake.set()
        elif len(buf) > self.max_buffer:
            try:
                buf.popleft()
            except IndexError:
                return
            self._dropped += 1
            if self._dropped in (1, 1000) or self._dropped % 100_000 == 0:
                logger.warning(
                    "task monitor buffer full (%d events): Redis at %s is slow or down; "
                    "%d events dropped so far",
                    self.max_buffer, self.url, self._dropped,
                )  # fmt: skip

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._closed:
                return
            thread = threading.Thread(target=self._run, name="pacificpy-monitor-flush", daemon=True)
            self._thread = thread
            thread.start()
            if not self._atexit_registered:
                # Write what is still buffered when the interpreter exits (registered after
                # the first event, so it runs after executors drained at exit).
                atexit.register(_flush_at_exit, weakref.ref(self))
                self._atexit_registered = True

    def _run(self) -> None:
        wake = self._wake
        while not self._closed:
            wake.wait()
            wake.clear()
            try:
                self.flush()
            except Exception:  # flush logs its own errors; never let the thread die
                logger.exception("task monitor flush failed")

    def flush(self) -> None:
        """Write every buffered event now (in this thread)."""
        with self._flush_lock:
            buf = self._buf
            while buf:
                items: list[tuple[Any, ...]] = []
                try:
                    while len(items) < _WINDOW:
                        items.append(buf.popleft())
                except IndexError:
                    pass
                if items:
                    self._write(items)

    def close(self) -> None:
        """Write what is buffered, stop the flusher thread and close the connection."""
        if self._closed:
            return
        try:
            self.flush()
        except Exception:
            logger.exception("task monitor: final flush failed")
        self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._clients.close()

    # -- writing -------------------------------------------------------------------------
    def _write(self, items: list[tuple[Any, ...]]) -> None:
        from redis.exceptions import RedisError

        try:
            payload = self._plan(items)
            writes = payload["e"]
            keys = [self._k_index, self._k_totals, self._k_dur, self._k_metrics, self._k_queues]
            script = self._clients.script("monitor_event")
            failed = 0
            # The window's record writes go in calls of at most _BATCH, its counters with
            # the first call, empty ones with the others. (A lone surrogate in some text is
            # written as "?".)
            for start in range(0, max(len(writes), 1), _BATCH):
                chunk = writes[start : start + _BATCH]
                if start == 0:
                    part = {**payload, "e": chunk}
                else:
                    part = {**{key: [] for key in payload}, "e": chunk}
                failed += script(keys, [self._k_task, self.ttl, dumps_value(part)])
            trim_args = [self.max_records, self._k_task, time.time() - self.ttl]
            self._clients.script("monitor_trim")([self._k_index], trim_args)
            if failed:
                logger.warning("task monitor: %d of %d events could not be written to Redis",
                               failed, len(writes))  # fmt: skip
        except (RedisError, OSError) as exc:
            logger.warning(
                "task monitor: could not write %d events to Redis at %s: %s",
                len(items), self.url, exc,
            )  # fmt: skip

    def _plan(self, items: list[tuple[Any, ...]]) -> dict[str, list[Any]]:
        """Turn a batch of events into the batch script's argument (see ``monitor_event.lua``):
        record writes and the batch's counter increments, every value a string.

        Consecutive events of one task within the batch (queued, running, completed) are
        folded into one write, and counters are summed per batch, so a busy process sends
        one script call per batch and about one record write per task.
        """
        totals: dict[tuple[str, str], int] = {}  # (name, status) -> events
        buckets: dict[tuple[str, int], int] = {}  # (name, bucket index) -> events
        dur_sums: dict[str, list[float]] = {}  # name -> [sum, count]
        queues: set[str] = set()
        metrics: dict[str, list[float]] = {}
        pending: dict[str, list[Any]] = {}  # task id -> [event head, fields] being folded
        writes: list[list[Any]] = []
        for item in items:
            kind = item[0]
            if kind == "throttled":  # counted only: the record stays as it was
                key = (item[2], "throttled")
                totals[key] = totals.get(key, 0) + 1
                continue
            if kind == "metric":
                _, name, labels, value = item
                base = f"{name}{_SEP}{orjson.dumps(labels).decode()}{_SEP}"
                entry = metrics.setdefault(base, [0, 0.0, 0.0])
                entry[0] += 1
                entry[1] += value
                entry[2] = value
                continue
            args, fields, count, duration, queue = self._event_args(item)
            if count is not None:
                totals[count] = totals.get(count, 0) + 1
            if duration is not None:
                name = args[5]
                bucket = (name, _bucket(DURATION_BUCKETS, duration))
                buckets[bucket] = buckets.get(bucket, 0) + 1
                summed = dur_sums.get(name)
                if summed is None:
                    dur_sums[name] = [duration, 1]
                else:
                    summed[0] += duration
                    summed[1] += 1
            if queue:
                queues.add(queue)
            task_id = args[0]
            folded = pending.get(task_id)
            if kind in _MERGED:
                if folded is not None and folded[0][2] == args[2]:
                    folded[1].update(fields)  # the latest progress, in the pending write
                else:
                    if folded is not None:
                        writes.append(_flat(*pending.pop(task_id)))
                    pending[task_id] = [args, fields]
                continue
            if kind in _FOLDABLE and folded is not None and folded[0][2] == args[2]:
                # Same task, same life: later fields win, the later ordering key holds.
                folded[1].update(fields)
                folded[0] = args
                continue
            if folded is not None:
                writes.append(_flat(*pending.pop(task_id)))
            if kind in _FOLDABLE:
                pending[task_id] = [args, fields]
            else:
                writes.append(_flat(args, fields))
        writes.extend(_flat(a, f) for a, f in pending.values())
        counts: list[str] = []
        for (name, index), events in buckets.items():
            counts += (f"{name}{_SEP}{index}", str(events))
        sums: list[str] = []
        for name, (total, finished) in dur_sums.items():
            counts += (f"{name}{_SEP}count", str(int(finished)))
            sums += (f"{name}{_SEP}sum", repr(total))
        counted: list[str] = []
        for (name, status), n in totals.items():
            counted += (f"{name}{_SEP}{status}", str(n))
        return {
            "e": writes,
            "t": counted,
            "d": counts,
            "s": sums,
            "q": sorted(queues),
            "m": [
                [base, str(n), repr(total), repr(last)]
                for base, (n, total, last) in metrics.items()
            ],
        }

    def _event_args(
        self, item: tuple[Any, ...]
    ) -> tuple[list[Any], dict[str, Any], tuple[str, str] | None, float | None, str]:
        """The head of one event in the batch script's argument (see ``monitor_event.lua``),
        the fields it sets, its totals field (``None``: not counted), its duration (for the
        histogram) and the queue it enqueued to. Every value is a string but the event time
        and the life (enqueue time; None: unordered), floats that ``_flat`` writes."""
        kind, now = item[0], item[1]
        life: float | None = None
        attempt = phase = queue = ""
        duration: float | None = None
        from_start = more = ""
        fields: dict[str, Any]
        env: TaskEnvelope | None = None
        if kind == "progress":
            ctx: TaskContext = item[2]
            task_id, name = ctx.id, ctx.name
            life, attempt, phase = ctx.enqueued_at, str(ctx.attempt), _PHASE_RUNNING
            fields = {"pdone": repr(item[3]), "ptotal": _f(item[4]), "pmsg": item[5] or ""}
            args = [task_id, now, life, attempt, phase, name, from_start, more]
            return args, fields, None, None, ""
        if kind in _FOLDABLE:
            env = item[2]
            assert env is not None
            task_id, name = env.task_id, env.task_name
            life, attempt = env.enqueued_at, str(env.attempt)
            if kind == "queued":
                phase, queue = _PHASE_QUEUED, env.queue
                fields = {"status": kind, "queue": env.queue, "attempts": "0",
                          "enqueued_at": life, "parent_id": env.parent_id or "",
                          "args": preview_call(env.args, env.kwargs, task=name)}  # fmt: skip
            elif kind == "running":
                phase = _PHASE_RUNNING
                fields = {"status": kind, "queue": env.queue, "attempts": attempt,
                          "started_at": now, "enqueued_at": life,
                          "parent_id": env.parent_id or ""}  # fmt: skip
            else:
                phase = _PHASE_DONE
                fields = {"status": kind, "attempts": attempt}
                if kind == "completed":
                    duration = item[4]
                    fields.update(finished_at=now, duration=_f(duration), result=preview(item[3]),
                                  error="", traceback="")  # fmt: skip
                elif kind == "failed":
                    _, _, _, error, trace, duration = item
                    fields.update(finished_at=now, duration=_f(duration), error=error,
                                  traceback=trace or "")  # fmt: skip
                else:
                    fields["error"] = item[3]
        else:
            task_id, name = item[2], item[3]
            if kind in ("dead", "abandoned", "cancelled"):
                # No envelope here: the event's own time orders it after the task's life
                # so far, and before a requeue (which starts a new life later).
                life, attempt, phase = now, "1000000", _PHASE_DONE
                fields = {"status": kind, "finished_at": now}
                if kind == "dead":
                    fields["error"] = item[4]
            elif kind == "start":
                kind = "running"
                fields = {"status": "running", "started_at": now, "finished_at": "",
                          "duration": ""}  # fmt: skip
                more = "1"
            else:  # "status": hand-reported
                status: TaskStatus = item[4]
                result = item[5]
                fields = {"status": status.value}
                if status.is_final:
                    from_start = "1"
                if status in (TaskStatus.FAILED, TaskStatus.DEAD, TaskStatus.RETRYING):
                    fields["error"] = "" if result is None else cap_error(str(result))
                elif result is not None:
                    fields["result"] = preview(result)
                kind = status.value
        args = [task_id, now, life, attempt, phase, name, from_start, more]
        # Started attempts are not counted, as in the in-memory store: /metrics gets
        # enqueues and outcomes (its documented statuses), never "running".
        count = None if kind == "running" else (name, kind)
        return args, fields, count, duration, queue

    # -- events --------------------------------------------------------------------------
    def task_queued(self, env: TaskEnvelope) -> None:
        self._push(("queued", time.time(), env))

    def task_running(self, env: TaskEnvelope) -> None:
        self._push(("running", time.time(), env))

    def task_completed(self, env: TaskEnvelope, value: Any, duration: float) -> None:
        self._push(("completed", time.time(), env, value, duration))

    def task_failed(
        self, env: TaskEnvelope, error: str, traceback: str | None, duration: float | None
    ) -> None:
        trace = None if traceback is None else cap_traceback(traceback)
        self._push(("failed", time.time(), env, cap_error(error), trace, duration))

    def task_retrying(self, env: TaskEnvelope, error: str, delay: float) -> None:
        self._push(("retrying", time.time(), env, cap_error(error)))

    def task_dead(self, task_id: str, name: str | None, error: str) -> None:
        self._push(("dead", time.time(), task_id, name or "?", cap_error(error)))

    def task_abandoned(self, task_id: str, name: str) -> None:
        self._push(("abandoned", time.time(), task_id, name))

    def task_throttled(self, env: TaskEnvelope, limit: str) -> None:
        self._push(("throttled", time.time(), env.task_name))

    def task_cancelled(self, task_id: str, name: str | None) -> None:
        self._push(("cancelled", time.time(), task_id, name or "?"))

    def task_progress(
        self, ctx: TaskContext, done: float, total: float | None, message: str | None
    ) -> None:
        self._push(("progress", time.time(), ctx, done, total, message))

    def record_start(self, task_id: str, name: str) -> None:
        self._push(("start", time.time(), task_id, name))

    def update_status(self, task_id: str, status: TaskStatus, result: Any = None) -> None:
        self._push(("status", time.time(), task_id, "?", status, result))

    def record_metric(self, name: str, value: float, labels: LabelSet) -> None:
        self._push(("metric", name, labels, value))

    # -- queries -------------------------------------------------------------------------
    @staticmethod
    def _record(raw: dict[bytes, bytes]) -> TaskRecord | None:
        if not raw or b"status" not in raw:
            return None
        g = raw.get
        return TaskRecord(
            id=(g(b"id") or b"").decode(),
            name=(g(b"name") or b"?").decode("utf-8", "replace"),
            status=TaskStatus.parse((g(b"status") or b"queued").decode()),
            queue=(g(b"queue") or b"default").decode("utf-8", "replace"),
            attempts=int(g(b"attempts") or 0),
            enqueued_at=_opt_float(g(b"enqueued_at")),
            started_at=_opt_float(g(b"started_at")),
            finished_at=_opt_float(g(b"finished_at")),
            duration=_opt_float(g(b"duration")),
            args_preview=_opt_str(g(b"args")),
            result_preview=_opt_str(g(b"result")),
            error=_opt_str(g(b"error")),
            traceback=_opt_str(g(b"traceback")),
            parent_id=_opt_str(g(b"parent_id")),
            updated_at=float(g(b"updated_at") or 0.0),
            progress_done=_opt_float(g(b"pdone")),
            progress_total=_opt_float(g(b"ptotal")),
            progress_message=_opt_str(g(b"pmsg")),
        )

    def get(self, task_id: str) -> TaskRecord | None:
        self.flush()
        return self._record(self.client.hgetall(self._k_task + task_id))

    def list(
        self, status: TaskStatus | None = None, name: str | None = None, limit: int = 100
    ) -> list[TaskRecord]:
        self.flush()
        client = self.client
        out: list[TaskRecord] = []
        start = 0
        chunk = max(limit, 100) if status is None and name is None else 500
        while len(out) < limit:
            ids = client.zrevrange(self._k_index, start, start + chunk - 1)
            if not ids:
                break
            start += len(ids)
            pipe = client.pipeline(transaction=False)
            for task_id in ids:
                pipe.hgetall(self._k_task + task_id.decode())
            for raw in pipe.execute():
                rec = self._record(raw)
                if rec is None:
                    continue
                if (status is None or rec.status is status) and (name is None or rec.name == name):
                    out.append(rec)
                    if len(out) >= limit:
                        break
        return out

    def rows(self) -> Rows:
        self.flush()
        client = self.client
        ids = client.zrevrange(self._k_index, 0, self.max_records - 1)
        out: Rows = []
        for i in range(0, len(ids), 1000):
            pipe = client.pipeline(transaction=False)
            for task_id in ids[i : i + 1000]:
                pipe.hmget(self._k_task + task_id.decode(), "name", "status", "duration",
                           "finished_at")  # fmt: skip
            for name, status, duration, finished_at in pipe.execute():
                if status is None:
                    continue
                out.append((
                    (name or b"?").decode("utf-8", "replace"),
                    TaskStatus.parse(status.decode()),
                    _opt_float(duration),
                    _opt_float(finished_at),
                ))  # fmt: skip
        return out

    def metrics(self) -> MetricsSnapshot:
        self.flush()
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self._k_totals)
        pipe.hgetall(self._k_dur)
        pipe.hgetall(self._k_metrics)
        pipe.smembers(self._k_queues)
        totals_raw, dur_raw, metrics_raw, queues_raw = pipe.execute()
        snap = MetricsSnapshot(queues={q.decode("utf-8", "replace") for q in queues_raw})
        for field, count in totals_raw.items():
            name, _, status = field.decode("utf-8", "replace").rpartition(_SEP)
            snap.totals[(name, status)] = int(count)
        hist: dict[str, list[Any]] = {}
        for field, raw in dur_raw.items():
            name, _, part = field.decode("utf-8", "replace").rpartition(_SEP)
            entry = hist.setdefault(name, [[0] * (len(DURATION_BUCKETS) + 1), 0.0, 0])
            if part == "sum":
                entry[1] = float(raw)
            elif part == "count":
                entry[2] = int(raw)
            elif part.isdigit() and int(part) <= len(DURATION_BUCKETS):
                entry[0][int(part)] = int(raw)
        snap.durations = {n: (e[0], e[1], e[2]) for n, e in hist.items()}
        user: dict[tuple[str, LabelSet], list[float]] = {}
        for field, raw in metrics_raw.items():
            name, labels_json, part = field.decode("utf-8", "replace").split(_SEP)
            labels: LabelSet = tuple((str(k), str(v)) for k, v in orjson.loads(labels_json))
            entry_u = user.setdefault((name, labels), [0.0, 0.0, 0.0])
            entry_u["csl".index(part)] = float(raw)
        snap.user = {k: (int(v[0]), v[1], v[2]) for k, v in user.items()}
        return snap

    def clear(self) -> None:
        """Delete every record and counter under this prefix (tests, resets)."""
        self.flush()
        client = self.client
        keys = [self._k_index, self._k_totals, self._k_dur, self._k_metrics, self._k_queues]
        for key in client.scan_iter(match=f"{self._k_task}*", count=1000):
            keys.append(key)
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
