"""Flow control on the SQLite backend (SPEC §10.5): concurrency leases and rate windows as
rows of the file, decided in one ``BEGIN IMMEDIATE`` (so they hold across processes), and
priorities in the order rows are leased.

The state reads the machine's clock (``time.time``); the unit tests below replace it in
the state's module with a clock they move, as the memory state's tests do. "Another
process" is another :class:`Database` on the same file: it shares nothing with the first
but the file and its locks.
"""

from __future__ import annotations

import sqlite3
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from pacificpy.background.backends.sqlite import sql
from pacificpy.background.backends.sqlite import state as sqlite_state
from pacificpy.background.backends.sqlite.db import Database
from pacificpy.background.backends.sqlite.queue import SQLiteQueue
from pacificpy.background.backends.sqlite.state import SQLiteTaskState
from pacificpy.background.flow import Rate
from pacificpy.background.task import Message, TaskEnvelope


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(sqlite_state, "time", types.SimpleNamespace(time=clock))
    return clock


@pytest.fixture
def state(tmp_path: Path) -> Iterator[SQLiteTaskState]:
    db = Database(tmp_path / "tasks.db")
    db.check()
    state = SQLiteTaskState(db)
    yield state
    state.close()


def _rows(state: SQLiteTaskState, table: str) -> int:
    return int(state.db.one(f"SELECT count(*) FROM pacificpy_flow_{table}"))


# -- the state -------------------------------------------------------------------------------
def test_lease_expires_unless_renewed(state: SQLiteTaskState, clock: Clock) -> None:
    assert state.admit("t", "a", 1, None, 10.0) is None
    assert state.admit("t", "b", 1, None, 10.0) == ("concurrency", 0.0)
    clock.now += 8
    state.renew_slots([("t", "a")], 10.0)
    clock.now += 8  # 16 s after the start, 8 after the renewal: still held
    assert state.admit("t", "b", 1, None, 10.0) == ("concurrency", 0.0)
    clock.now += 3  # not renewed for 11 s (its worker died): gone
    assert state.admit("t", "b", 1, None, 10.0) is None
    state.release_slot("t", "b")  # given back at once
    assert state.admit("t", "c", 1, None, 10.0) is None


def test_an_expired_lease_is_not_renewed_back(state: SQLiteTaskState, clock: Clock) -> None:
    assert state.admit("t", "a", 1, None, 10.0) is None
    clock.now += 11
    state.renew_slots([("t", "a")], 10.0)  # too late: another may hold the slot by now
    assert state.admit("t", "b", 1, None, 10.0) is None


def test_rate_window_slides(state: SQLiteTaskState, clock: Clock) -> None:
    for i in range(3):
        assert state.admit("t", f"h{i}", None, Rate(3, 1.0), 10.0) is None
        clock.now += 0.125  # binary fractions: the sums are exact
    held = state.admit("t", "h3", None, Rate(3, 1.0), 10.0)
    assert held is not None and held[0] == "rate_limit"
    assert held[1] == pytest.approx(0.625)  # the first start leaves the window then
    clock.now += 0.625
    assert state.admit("t", "h3", None, Rate(3, 1.0), 10.0) is None
    # The window slid by one start, not a whole second: the next waits for the second.
    held = state.admit("t", "h4", None, Rate(3, 1.0), 10.0)
    assert held is not None and held[1] == pytest.approx(0.125)


def test_admission_takes_both_limits_or_neither(state: SQLiteTaskState, clock: Clock) -> None:
    assert state.admit("t", "a", 2, Rate(1, 60.0), 10.0) is None
    assert state.admit("t", "b", 2, Rate(1, 60.0), 10.0) == ("rate_limit", 60.0)
    assert _rows(state, "slots") == 1  # b took no slot
    state.release_slot("t", "a")
    assert state.admit("t", "c", 1, None, 10.0) is None
    assert state.admit("t", "d", 1, Rate(5, 60.0), 10.0) == ("concurrency", 0.0)
    assert _rows(state, "starts") == 1  # d recorded no start


def test_limits_of_one_task_leave_another_alone(state: SQLiteTaskState, clock: Clock) -> None:
    assert state.admit("t", "a", 1, Rate(1, 60.0), 10.0) is None
    assert state.admit("u", "a", 1, Rate(1, 60.0), 10.0) is None


def test_retention_deletes_expired_leases_and_starts(state: SQLiteTaskState, clock: Clock) -> None:
    assert state.admit("t", "a", 1, Rate(5, 1.0), 10.0) is None
    assert state.admit("u", "b", None, Rate(5, 60.0), 10.0) is None
    clock.now += 11
    assert state.expire() == 2  # t's lease and start; u's start is still in its window
    assert (_rows(state, "slots"), _rows(state, "starts")) == (0, 1)


def test_two_files_racing_never_admit_past_the_limits(tmp_path: Path) -> None:
    """Two state objects on one file (as two processes), eight threads trying at once:
    exactly the limit is admitted, never more."""
    states = [SQLiteTaskState(Database(tmp_path / "tasks.db")) for _ in range(2)]
    states[0].db.check()
    admitted: list[str] = []
    lock = threading.Lock()
    go = threading.Barrier(8)

    def race(state: SQLiteTaskState, me: int) -> None:
        go.wait()
        for i in range(10):
            holder = f"{me}:{i}"
            slot = state.admit("slots", holder, 3, None, 60.0)
            rate = state.admit("rate", holder, None, Rate(7, 60.0), 60.0)
            with lock:
                admitted.extend(name for name, a in (("slot", slot), ("rate", rate)) if a is None)

    threads = [threading.Thread(target=race, args=(states[i % 2], i)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert admitted.count("slot") == 3
        assert admitted.count("rate") == 7
    finally:
        for s in states:
            s.close()


# -- priorities in the queue -----------------------------------------------------------------
def _publish(queue: SQLiteQueue, task_id: str, priority: int, q: str = "default",
             delay: float | None = None) -> None:  # fmt: skip
    env = TaskEnvelope(task_id=task_id, task_name="t", queue=q, priority=priority)
    queue.publish(Message(env, b"{}"), delay)


def test_lease_takes_higher_priority_first_then_due_order(tmp_path: Path) -> None:
    db = Database(tmp_path / "tasks.db")
    db.check()
    queue = SQLiteQueue(db, owner="me")
    for task_id, priority in [("a", 0), ("b", 3), ("c", 0), ("d", 9), ("e", 3)]:
        _publish(queue, task_id, priority)
    _publish(queue, "later", 9, delay=60)  # not due: not taken, whatever its priority
    _publish(queue, "other", 9, q="other")  # another queue
    got = queue.lease(10, ("default",), 30.0)
    assert [m.task_id for m in got] == ["d", "b", "e", "a", "c"]
    assert [m.envelope.priority for m in got] == [9, 3, 3, 0, 0]
    assert [m.task_id for m in queue.lease(10, None, 30.0)] == ["other"]
    db.close()


def test_lease_of_fewer_than_ready_keeps_the_order(tmp_path: Path) -> None:
    db = Database(tmp_path / "tasks.db")
    db.check()
    queue = SQLiteQueue(db, owner="me")
    for task_id, priority in [("a", 0), ("b", 0), ("c", 5)]:
        _publish(queue, task_id, priority)
    assert [m.task_id for m in queue.lease(2, None, 30.0)] == ["c", "a"]
    assert [m.task_id for m in queue.lease(2, None, 30.0)] == ["b"]
    db.close()


@pytest.mark.parametrize(
    ("statement", "index"),
    [
        (sql.PRIORITIZED_ANY, "pacificpy_tasks_prioritized (priority=? AND run_at<?)"),
        (sql.PRIORITIZED_IN.format(queues="?, ?"),
         "pacificpy_tasks_prioritized (priority=? AND run_at<?)"),
        (sql.READY_ANY, "pacificpy_tasks_waiting (run_at<?)"),
        (sql.READY_IN.format(queues="?"), "pacificpy_tasks_waiting (run_at<?)"),
    ],
)  # fmt: skip
def test_lease_queries_search_an_index_without_sorting(
    tmp_path: Path, statement: str, index: str
) -> None:
    db = Database(tmp_path / "tasks.db")
    db.check()
    params = (0,) * statement.count("?")
    plan = " | ".join(r[3] for r in db.execute("EXPLAIN QUERY PLAN " + statement, params))
    assert f"SEARCH pacificpy_tasks USING INDEX {index}" in plan
    assert "TEMP B-TREE" not in plan
    db.close()


def test_a_file_from_before_priorities_gets_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sql.SCHEMA.replace(",\n    priority INTEGER NOT NULL DEFAULT 0", "")
    assert old != sql.SCHEMA
    conn = sqlite3.connect(path)
    conn.executescript(old)
    conn.execute(
        "INSERT INTO pacificpy_tasks (task_id, task_name, queue, attempt, data, run_at) "
        "VALUES ('waiting', 't', 'default', 1, x'7b7d', 0)"
    )
    conn.commit()
    conn.close()
    db = Database(path)
    db.check()
    queue = SQLiteQueue(db, owner="me")
    _publish(queue, "new", 4)
    assert [(m.task_id, m.envelope.priority) for m in queue.lease(5, None, 30.0)] == [
        ("new", 4), ("waiting", 0)
    ]  # fmt: skip
    db.close()
