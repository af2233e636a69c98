"""Periodic tasks (SPEC 10.3): ``@background(schedule=...)``, with no beat process.

This module holds what a schedule is (:class:`Schedule`, its slots, the checks of the
decorator's options), the declared schedules, the slot keys, :func:`plan_slots` (what is
due at a moment) and what the CLI and the dashboard show. The thread that enqueues the
slots is :mod:`pacificpy.background.scheduler`.

Every app process and every worker process runs a scheduler (a daemon thread, started
with the backend and stopped with it). Each slot of each schedule is enqueued exactly once
across all of them:

1. At a slot, each scheduler reads the schedule's *last enqueued slot* from the backend's
   ``TaskState`` and asks it to advance that record to the slot due
   (``advance_schedule_slot``: an atomic compare-and-set from the value it read). One
   process wins; the others see the record moved and do nothing.
2. The winner enqueues the run with ``apply_async(idempotency_key="name@<slot ISO UTC>")``:
   its task id is derived from the key, so the CLI and the dashboard find a slot's run
   (and its status) from the slot alone, and an enqueue retried after an ambiguous failure
   cannot queue the slot twice. The idempotency key alone is not the gate: a key is
   released when its run fails for good, after which a late scheduler could claim it again.

``missed="once"``: slots nobody enqueued (every process was down, or stalled past the
slot) get one catch-up run, for the newest of them, when a scheduler next sees them.
``missed="skip"``: they get none; a scheduler enqueues only slots that fell while it
was running.

Cron expressions are parsed by ``cronsim`` (5 fields, or 6 with seconds first), evaluated
in ``schedule_tz``. Intervals (``datetime.timedelta``) are aligned on the Unix epoch, so
every process computes the same slots with no coordination.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import itertools
import logging
import math
import time
import zoneinfo
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from cronsim import CronSim, CronSimError

from pacificpy.errors import ConfigurationError

if TYPE_CHECKING:
    from pacificpy.background.backend import BackgroundBackend

__all__ = [
    "MAX_LATE",
    "MISSED_POLICIES",
    "Schedule",
    "ScheduleView",
    "all_schedules",
    "declared",
    "get_schedule",
    "parse_schedule",
    "plan_slots",
    "schedule_views",
    "slot_key",
    "slot_of_key",
]

logger = logging.getLogger("pacificpy.background.schedules")

MISSED_POLICIES = ("skip", "once")
#: How late a scheduler may wake for a slot that fell while it ran and still enqueue it;
#: a slot later than this counts as missed.
MAX_LATE = 60.0
#: Most live slots enqueued at once (a very short interval after a long pause).
MAX_LIVE = 100
#: Most slots walked to find one (cronsim's walks are exact; this only bounds a surprise).
_WALK = 1000


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When a periodic task runs: a cron expression in a zone, or a fixed interval."""

    cron: str | None
    interval: float | None
    tz: str
    missed: str

    @property
    def expression(self) -> str:
        """The schedule as a person wrote it: the cron expression, or ``every <interval>``."""
        if self.cron is not None:
            return self.cron
        assert self.interval is not None
        return f"every {dt.timedelta(seconds=self.interval)}"

    def _zone(self) -> dt.tzinfo:
        return dt.timezone.utc if self.tz == "UTC" else zoneinfo.ZoneInfo(self.tz)

    def slot_at_or_before(self, now: float) -> float:
        """The latest slot at or before ``now`` (a Unix time)."""
        if self.interval is not None:
            return round(math.floor(now / self.interval) * self.interval, 6)
        return self._cron_floor(now, strict=False)

    def slot_before(self, slot: float) -> float:
        """The slot before ``slot``."""
        if self.interval is not None:
            return round(slot - self.interval, 6)
        return self._cron_floor(slot, strict=True)

    def slot_after(self, now: float) -> float:
        """The first slot strictly after ``now``."""
        if self.interval is not None:
            return round((math.floor(now / self.interval) + 1) * self.interval, 6)
        slot = self._cron_floor(now, strict=False)
        for found in self._walk(slot):
            if found > now:
                return found
        raise RuntimeError(f"cron {self.cron!r}: no slot after {now}")  # pragma: no cover

    def _walk(self, slot: float) -> Iterator[float]:
        """The slots after ``slot``, by cronsim's forward walk from it (bounded)."""
        assert self.cron is not None
        start = _at(slot).astimezone(self._zone())
        return itertools.islice((d.timestamp() for d in CronSim(self.cron, start)), _WALK)

    def _cron_floor(self, ts: float, *, strict: bool) -> float:
        """The latest cron slot before ``ts`` (or at it, unless ``strict``).

        cronsim walks wall-clock time: walking backwards from inside a repeated hour (the
        fall-back day) it can step over a slot of that hour, and walking forwards from an
        arbitrary instant there it can answer a slot already past. Walking forwards *from a
        slot* is what it is made for, so: step back until some slot is before ``ts``, then
        walk forwards from it to the last one before ``ts``.
        """
        assert self.cron is not None

        def before(t: float) -> bool:
            return t < ts or (not strict and t == ts)

        # cronsim works in whole seconds and steps strictly before its start.
        start = _at(math.floor(ts) + 1).astimezone(self._zone())
        back = (d.timestamp() for d in CronSim(self.cron, start, reverse=True))
        floor = next((t for t in itertools.islice(back, _WALK) if before(t)), None)
        if floor is None:  # pragma: no cover - cronsim refuses expressions that never match
            raise RuntimeError(f"cron {self.cron!r}: no slot before {ts}")
        for t in self._walk(floor):
            if not before(t):
                break
            floor = max(floor, t)
        return floor


def parse_schedule(schedule: str | dt.timedelta, tz: str = "UTC", missed: str = "skip") -> Schedule:
    """Check ``@background``'s schedule options and build the :class:`Schedule`.

    Raises:
        ConfigurationError: the expression, interval, zone or policy is invalid.
    """
    if missed not in MISSED_POLICIES:
        raise ConfigurationError(f"missed must be 'skip' or 'once', not {missed!r}")
    if not isinstance(tz, str):
        raise ConfigurationError(f"schedule_tz must be a zone name such as 'UTC', not {tz!r}")
    try:
        zone = dt.timezone.utc if tz == "UTC" else zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(f"schedule_tz {tz!r} is not a known time zone: {exc}") from None
    if isinstance(schedule, dt.timedelta):
        seconds = schedule.total_seconds()
        if seconds <= 0:
            raise ConfigurationError(f"a schedule interval must be positive, not {schedule}")
        return Schedule(None, seconds, tz, missed)
    if not isinstance(schedule, str):
        raise ConfigurationError(
            "schedule must be a cron expression (str) or a datetime.timedelta, "
            f"not {type(schedule).__name__}"
        )
    expr = " ".join(schedule.split())
    if len(expr.split(" ")) not in (5, 6):
        raise ConfigurationError(
            f"cron expression {schedule!r} must have 5 fields (minute hour day month weekday) "
            "or 6 (second first)"
        )
    try:
        next(CronSim(expr, dt.datetime.now(zone)))
    except (CronSimError, StopIteration) as exc:
        raise ConfigurationError(f"invalid cron expression {schedule!r}: {exc}") from None
    return Schedule(expr, None, tz, missed)


def check_no_required_args(fn: Callable[..., Any], name: str) -> None:
    """A scheduled task is called with no arguments: refuse one that requires some.

    Raises:
        ConfigurationError: a parameter has no default.
    """
    required = [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    if required:
        raise ConfigurationError(
            f"scheduled task {name} is called with no arguments, but requires "
            f"{', '.join(required)}; give them defaults"
        )


# -- the declared schedules -------------------------------------------------------------------
# Task name -> (the BackgroundTask, its Schedule). Filled as modules are imported, like the
# task registry, so no reset_all() forgets them.
_schedules: dict[str, tuple[Any, Schedule]] = {}


def register(task: Any, schedule: Schedule) -> None:
    """Record that ``task`` (a ``BackgroundTask``) runs on ``schedule``."""
    _schedules[task.name] = (task, schedule)


def get_schedule(name: str) -> Schedule | None:
    """The schedule of task ``name``, or None if it has none."""
    found = _schedules.get(name)
    return found[1] if found is not None else None


def declared() -> list[tuple[str, Any, Schedule]]:
    """Every declared schedule as ``(task name, BackgroundTask, Schedule)``."""
    return [(name, task, sched) for name, (task, sched) in list(_schedules.items())]


def all_schedules() -> dict[str, Schedule]:
    """Every declared schedule, by task name."""
    return {name: sched for name, (_, sched) in sorted(_schedules.items())}


# -- slots and their keys ---------------------------------------------------------------------
def _at(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc)


def slot_iso(slot: float) -> str:
    """A slot as ISO 8601 in UTC (``2026-03-08T07:00:00+00:00``)."""
    return _at(slot).isoformat()


def slot_key(name: str, slot: float) -> str:
    """The idempotency key of ``name``'s run for ``slot``: ``name@<slot ISO UTC>``."""
    return f"{name}@{slot_iso(slot)}"


def slot_of_key(name: str, key: str | None) -> dt.datetime | None:
    """The slot a scheduled run's idempotency key names (None: not a scheduled run)."""
    if key is None or name not in _schedules or not key.startswith(name + "@"):
        return None
    try:
        return dt.datetime.fromisoformat(key[len(name) + 1 :])
    except ValueError:
        return None


def plan_slots(schedule: Schedule, now: float, started: float, last: float | None) -> list[float]:
    """The slots to enqueue at ``now``, oldest first; the last one is the slot to record.

    ``started``: when this process's scheduler started; ``last``: the last slot any process
    enqueued (None: the schedule never ran).

    A slot that fell while this scheduler was running, at most :data:`MAX_LATE` seconds
    ago, is *live*: it is enqueued, however late the scheduler woke (a loaded machine, a
    pause). Slots after ``last`` that are not live were *missed* (no scheduler was running,
    or all were later than ``MAX_LATE``): ``missed="once"`` gives them one catch-up run,
    for the newest of them; ``"skip"`` none. A schedule that never ran has missed nothing.
    """
    due = schedule.slot_at_or_before(now)
    if last is not None and due <= last:
        return []
    floor = max(started, now - MAX_LATE)
    live: list[float] = []
    slot = due
    while slot >= floor and (last is None or slot > last) and len(live) < MAX_LIVE:
        live.append(slot)
        slot = schedule.slot_before(slot)
    runs: list[float] = []
    if schedule.missed == "once" and last is not None and slot > last:
        runs.append(slot)  # the newest missed slot stands for all of them
    runs.extend(reversed(live))
    return runs


# -- what the CLI and the dashboard show ------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ScheduleView:
    """One schedule as a person sees it."""

    name: str
    expression: str
    zone: str
    missed: str
    last_run: dt.datetime | None
    last_task_id: str | None
    last_status: str | None
    next_run: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "expression": self.expression,
            "zone": self.zone,
            "missed": self.missed,
            "last_run": self.last_run.isoformat() if self.last_run else None,
            "last_task_id": self.last_task_id,
            "last_status": self.last_status,
            "next_run": self.next_run.isoformat(),
        }


def schedule_views(backend: BackgroundBackend, now: float | None = None) -> list[ScheduleView]:
    """Every declared schedule with its last run (and that run's status) and next run.

    The last run is what ``backend``'s state recorded (a backend whose state lives in
    another process's memory, the local executor, shows none); its status is the
    monitor's record of the run, else its stored outcome.
    """
    from pacificpy.background.decorators import _idempotent_id

    now = time.time() if now is None else now
    state = backend.state
    views = []
    for name, schedule in all_schedules().items():
        last = state.last_schedule_slot(name) if state.keeps_schedules else None
        task_id = status = None
        last_run = None
        if last is not None:
            last_run = _at(last)
            task_id = _idempotent_id(name, slot_key(name, last))
            found = backend.get_status_sync(task_id)
            status = found.value if found is not None else None
        zone = schedule._zone()
        views.append(
            ScheduleView(
                name,
                schedule.expression,
                schedule.tz,
                schedule.missed,
                last_run.astimezone(zone) if last_run else None,
                task_id,
                status,
                _at(schedule.slot_after(now)).astimezone(zone),
            )
        )
    return views
