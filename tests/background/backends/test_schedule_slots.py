"""The schedule-slot methods of every ``TaskState`` (memory, Redis, SQLite, PostgreSQL): a slot is
advanced by exactly one of many racing callers (a compare-and-set from the value each
read), never backwards, and read back by any.

"Processes" are separate state objects over one store (a Redis server, a SQLite file, a
PostgreSQL schema), each with its own connections, racing from threads.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from pacificpy.background import background, schedules
from pacificpy.background.backends.postgres import PostgresTaskState
from pacificpy.background.backends.redis.state import RedisTaskState
from pacificpy.background.backends.sqlite.db import Database
from pacificpy.background.backends.sqlite.state import SQLiteTaskState
from pacificpy.background.backends.state import MemoryTaskState, TaskState
from pacificpy.background.scheduler import start_scheduler
from pacificpy.testing import CapturingBackend

RACERS = 8


def _states(kind: str, url: str, tmp_path: Path) -> Callable[[], TaskState]:
    if kind == "memory":
        shared = MemoryTaskState()  # one process: one state
        return lambda: shared
    if kind == "redis":
        prefix = "sched-" + uuid.uuid4().hex[:8]
        return lambda: RedisTaskState(url, prefix=prefix)
    if kind == "postgres":
        return lambda: PostgresTaskState(url)
    path = tmp_path / "tasks.db"
    return lambda: SQLiteTaskState(Database(path))


@pytest.fixture(params=["memory", "redis", "sqlite", "postgres"])
def make_state(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], TaskState]:
    fixture = {"redis": "redis_url", "postgres": "postgres_url"}.get(request.param)
    url = request.getfixturevalue(fixture) if fixture else ""
    return _states(request.param, url, tmp_path)


def test_one_of_many_racing_callers_advances_a_slot(make_state: Callable[[], TaskState]) -> None:
    states = [make_state() for _ in range(RACERS)]
    previous = None
    for slot in (1000.0, 1001.0, 1002.5):
        barrier = threading.Barrier(RACERS)
        won: list[bool] = []
        threads = [
            threading.Thread(target=_race, args=(state, slot, previous, barrier, won))
            for state in states
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(won) == [False] * (RACERS - 1) + [True], slot
        assert all(s.last_schedule_slot("tests.job") == slot for s in states)
        previous = slot


def _race(
    state: TaskState,
    slot: float,
    previous: float | None,
    barrier: threading.Barrier,
    won: list[bool],
) -> None:
    barrier.wait()
    won.append(state.advance_schedule_slot("tests.job", slot, previous))


def test_a_slot_moves_only_from_the_value_read_and_forwards(
    make_state: Callable[[], TaskState],
) -> None:
    state = make_state()
    assert state.keeps_schedules
    assert state.last_schedule_slot("tests.job") is None
    first = 1_764_000_000.25
    assert state.advance_schedule_slot("tests.job", first, None) is True
    assert state.advance_schedule_slot("tests.job", first + 1, None) is False  # one is there
    assert state.advance_schedule_slot("tests.job", first, first) is False  # not later
    assert state.advance_schedule_slot("tests.job", first - 1, first) is False  # backwards
    assert state.advance_schedule_slot("tests.job", first + 2, first - 1) is False  # stale
    assert state.last_schedule_slot("tests.job") == first  # exact, not rounded
    assert state.advance_schedule_slot("tests.job", first + 2, first) is True
    assert state.last_schedule_slot("tests.job") == first + 2
    assert state.last_schedule_slot("tests.other") is None
    assert state.advance_schedule_slot("tests.other", 5.0, None) is True  # per schedule


class _NoSlots(MemoryTaskState):
    """A state written before schedules existed: the contract's defaults."""

    keeps_schedules = False
    last_schedule_slot = TaskState.last_schedule_slot
    advance_schedule_slot = TaskState.advance_schedule_slot


class _NoSlotsBackend(CapturingBackend):
    _no_slots = _NoSlots()

    @property
    def state(self) -> TaskState:
        return self._no_slots


def test_a_state_that_keeps_no_slots_runs_no_scheduler(caplog: pytest.LogCaptureFixture) -> None:
    saved = dict(schedules._schedules)
    try:
        background(name="tests.noslots", schedule="* * * * *")(lambda: None)
        assert start_scheduler(_NoSlotsBackend()) is None
    finally:
        schedules._schedules.clear()
        schedules._schedules.update(saved)
    assert "keeps no schedules: 1 periodic task(s) will not run" in caplog.text
    assert _NoSlots().last_schedule_slot("x") is None
    with pytest.raises(NotImplementedError):
        _NoSlots().advance_schedule_slot("x", 1.0, None)
