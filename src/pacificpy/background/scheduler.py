"""The scheduler of periodic tasks: one daemon thread per process that enqueues each due
slot of the declared schedules (:mod:`pacificpy.background.schedules`), once across every
process sharing the backend's state.

:func:`start_scheduler` is called when an app starts (``lifecycle.app_startup``) and when
a worker process starts (ARQ's ``on_startup``, Celery's ``worker_ready``);
:func:`stop_scheduler` when they stop.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pacificpy.background import config
from pacificpy.background.schedules import Schedule, declared, plan_slots, slot_iso, slot_key

if TYPE_CHECKING:
    from pacificpy.background.backend import BackgroundBackend
    from pacificpy.background.backends.state import TaskState

__all__ = ["ENQUEUE_PAUSES", "MAX_SLEEP", "Scheduler", "start_scheduler", "stop_scheduler"]

logger = logging.getLogger("pacificpy.background.schedules")

#: Longest the scheduler sleeps between two looks at the clock (a wall clock set back or
#: forward is noticed within this many seconds).
MAX_SLEEP = 30.0
#: Pauses between the tries of a slot's enqueue that failed.
ENQUEUE_PAUSES = (0.25, 1.0)


class Scheduler:
    """Enqueues the declared schedules' slots from this process (a daemon thread).

    Args:
        backend: whose ``TaskState`` records the last slot of each schedule.
        clock: the wall clock (Unix seconds); tests pass a controlled one and call
            :meth:`tick` themselves.
    """

    def __init__(self, backend: BackgroundBackend, clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.clock = clock
        self.started = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._settled: dict[str, float] = {}  # schedule -> the latest slot decided here

    @property
    def state(self) -> TaskState:
        return self.backend.state

    def tick(self, now: float | None = None) -> list[tuple[str, float]]:
        """Enqueue what is due at ``now`` (default: the clock); return ``(name, slot)``
        of each run this process enqueued."""
        now = self.clock() if now is None else now
        sent: list[tuple[str, float]] = []
        for name, task, schedule in declared():
            try:
                sent.extend(self._tick_one(name, task, schedule, now))
            except Exception:
                logger.exception("scheduler: schedule of %s failed at %s", name, slot_iso(now))
        return sent

    def _tick_one(
        self, name: str, task: Any, schedule: Schedule, now: float
    ) -> list[tuple[str, float]]:
        due = schedule.slot_at_or_before(now)
        if due <= self._settled.get(name, -math.inf):
            return []  # this slot was decided already: no round trip to the state
        state = self.state
        last = state.last_schedule_slot(name)
        runs = plan_slots(schedule, now, self.started, last)
        if not runs:
            self._settled[name] = due  # enqueued already, or not this process's to enqueue
            return []
        if not state.advance_schedule_slot(name, runs[-1], last):
            return []  # another process advanced it since we read it: those slots are its
        self._settled[name] = due
        return [(name, slot) for slot in runs if self._enqueue(name, task, slot)]

    def _enqueue(self, name: str, task: Any, slot: float) -> bool:
        """Enqueue ``slot``'s run, trying again after a failure (the slot's key makes a
        second try harmless if the first one did get through). False: given up, logged."""
        for pause in (*ENQUEUE_PAUSES, None):
            try:
                task.apply_async(idempotency_key=slot_key(name, slot))
                return True
            except Exception:
                if pause is None or self._stop.wait(pause):
                    logger.exception(
                        "scheduler: could not enqueue %s for %s; this slot is lost",
                        name, slot_iso(slot),
                    )  # fmt: skip
                    return False
                logger.warning(
                    "scheduler: enqueue of %s for %s failed; trying again in %ss",
                    name, slot_iso(slot), pause, exc_info=True,
                )  # fmt: skip
        return False  # pragma: no cover - the loop always returns

    def next_wake(self, now: float) -> float:
        """Seconds to sleep from ``now`` until the next slot of any schedule."""
        slots = [s.slot_after(now) for _, _, s in declared()]
        if not slots:
            return MAX_SLEEP
        return min(max(min(slots) - now, 0.0) + 0.001, MAX_SLEEP)

    def start(self) -> None:
        """Run :meth:`tick` at every slot on a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="pacificpy-scheduler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tick()
            if self._stop.wait(self.next_wake(self.clock())):
                return

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (an enqueue in progress finishes first)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)


# The scheduler this process runs (None: none). Started with the backend, stopped with it.
_scheduler: Scheduler | None = None
_scheduler_lock = threading.Lock()


def start_scheduler(backend: BackgroundBackend) -> Scheduler | None:
    """Start this process's scheduler on ``backend`` if any task has a schedule.

    Called when the app starts and when a worker process starts; a second call while one
    runs does nothing. Returns the scheduler (None: no schedules, or the backend's state
    keeps no schedules, which is logged).
    """
    global _scheduler
    schedules = declared()
    if not schedules:
        return None
    with _scheduler_lock:
        if _scheduler is not None:
            return _scheduler
        if not backend.state.keeps_schedules:
            logger.error(
                "the %s backend's state keeps no schedules: %d periodic task(s) will not run",
                backend.kind, len(schedules),
            )  # fmt: skip
            return None
        _scheduler = Scheduler(backend)
        _scheduler.start()
    logger.info("PacificPy scheduler running %d schedule(s)", len(schedules))
    return _scheduler


def _forget_in_child() -> None:
    # A forked child (a Celery prefork process) has no scheduler thread: it does not
    # inherit the parent's, and must not believe it runs one.
    global _scheduler
    _scheduler = None


os.register_at_fork(after_in_child=_forget_in_child)


@config.resets(__name__, "_scheduler")
def stop_scheduler() -> None:
    """Stop this process's scheduler, if it runs."""
    global _scheduler
    with _scheduler_lock:
        scheduler, _scheduler = _scheduler, None
    if scheduler is not None:
        scheduler.stop()
