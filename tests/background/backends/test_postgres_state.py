"""The PostgreSQL TaskState against the machine's PostgreSQL (a database of this module's
own): every method of the contract, retention, concurrent first use by several processes,
and a forked child that opens its own connection."""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pacificpy.background.backends.postgres import PostgresTaskState
from pacificpy.background.backends.postgres import state as pg_state
from pacificpy.background.backends.state import Ending
from pacificpy.background.dead_letter import DeadLetter
from pacificpy.background.task import Outcome
from pacificpy.types import TaskStatus
from tests.support.postgres import PostgresDatabase, require_postgres

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def database() -> Iterator[PostgresDatabase]:
    require_postgres()
    with PostgresDatabase() as db:
        yield db


@pytest.fixture
def state(database: PostgresDatabase) -> Iterator[PostgresTaskState]:
    st = PostgresTaskState(database.url)
    yield st
    st.clear_dead_letters()
    st.close()


def _id() -> str:
    return uuid.uuid4().hex


def _letter(failed_at: float, task_id: str | None = None) -> DeadLetter:
    return DeadLetter(
        id=_id(),
        task_id=task_id or _id(),
        task_name="t",
        args=[],
        kwargs={},
        error="ValueError: x",
        traceback="",
        attempts=1,
        enqueued_at=failed_at - 1,
        failed_at=failed_at,
        reason="failed",
    )


def test_outcomes(state: PostgresTaskState) -> None:
    task_id = _id()
    assert state.get_outcome(task_id) is None
    state.store_outcome(task_id, Outcome(TaskStatus.COMPLETED, value={"a": [1, 2]}))
    got = state.get_outcome(task_id)
    assert got is not None and got.status is TaskStatus.COMPLETED and got.value == {"a": [1, 2]}
    state.store_outcome(task_id, Outcome(TaskStatus.COMPLETED, value=2))  # replaced
    assert state.wait_outcome(task_id, timeout=5).value == 2
    state.clear_outcome(task_id)
    assert state.get_outcome(task_id) is None
    with pytest.raises(TimeoutError):
        state.wait_outcome(task_id, timeout=0.2)


async def test_async_outcome(state: PostgresTaskState) -> None:
    task_id = _id()
    await state.afinish(Ending(task_id, Outcome(TaskStatus.COMPLETED, value=7)))
    assert (await state.await_outcome(task_id, timeout=5)).value == 7


def test_dead_letters(state: PostgresTaskState) -> None:
    now = time.time()
    old, new = _letter(now - 10), _letter(now)
    state.add_dead_letter(new)
    state.add_dead_letter(old)
    assert [d.id for d in state.list_dead_letters()] == [new.id, old.id]  # newest first
    assert [d.id for d in state.list_dead_letters(limit=1)] == [new.id]
    got = state.get_dead_letter(old.id)
    assert got is not None and got.to_dict() == old.to_dict()
    popped = state.pop_dead_letter(old.id)
    assert popped is not None and popped.id == old.id
    assert state.pop_dead_letter(old.id) is None
    assert state.clear_dead_letters() == 1
    assert state.list_dead_letters() == []


def test_dead_letters_keep_the_newest(state: PostgresTaskState) -> None:
    state.max_dead_letters = 3
    now = time.time()
    letters = [_letter(now + i) for i in range(5)]
    for letter in letters:
        state.add_dead_letter(letter)
    assert [d.id for d in state.list_dead_letters()] == [d.id for d in letters[:1:-1]]


def test_idempotency_keys(state: PostgresTaskState) -> None:
    name, key = "task", _id()
    assert state.claim(name, key, "first", ttl=60)
    assert not state.claim(name, key, "second", ttl=60)
    assert state.claim("other-task", key, "third", ttl=60)  # keys are per task
    state.release(name, key)
    assert state.claim(name, key, "fourth", ttl=0.2)
    time.sleep(0.3)  # the key's TTL passing is the behaviour under test
    assert state.claim(name, key, "fifth", ttl=60)  # an expired holder is replaced


def test_delivery_counts_and_finish(state: PostgresTaskState) -> None:
    task_id = _id()
    assert [state.count_delivery(task_id, 1) for _ in range(3)] == [1, 2, 3]
    assert state.count_delivery(task_id, 2) == 1  # per attempt
    state.forget_deliveries(task_id, 2)
    assert state.count_delivery(task_id, 2) == 1
    assert state.claim("t", task_id, task_id, ttl=60)
    state.finish(
        Ending(task_id, Outcome(TaskStatus.FAILED, error="x"), (task_id, 1), ("t", task_id))
    )
    assert state.count_delivery(task_id, 1) == 1  # forgotten
    assert state.claim("t", task_id, "again", ttl=60)  # released
    got = state.get_outcome(task_id)
    assert got is not None and got.status is TaskStatus.FAILED


def test_expired_rows_are_deleted(state: PostgresTaskState) -> None:
    short = PostgresTaskState(state.url, result_ttl=0.1)
    task_id = _id()
    short.store_outcome(task_id, Outcome(TaskStatus.COMPLETED, value=1))
    short.count_delivery(task_id, 1)
    short.claim("t", task_id, task_id, ttl=0.1)
    time.sleep(0.2)  # the TTL passing is the behaviour under test
    assert short.get_outcome(task_id) is None  # expired: not served
    assert short.expire() >= 3
    assert short.expire() == 0
    short.close()


def test_every_thousandth_finish_expires_a_batch(
    state: PostgresTaskState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_state, "EXPIRE_EVERY", 2)
    calls = []
    monkeypatch.setattr(state, "expire", lambda: calls.append(1) or 0)
    for _ in range(4):
        state.store_outcome(_id(), Outcome(TaskStatus.COMPLETED, value=1))
    assert len(calls) == 2


def _first_use(url: str, task_id: str) -> None:
    PostgresTaskState(url).store_outcome(task_id, Outcome(TaskStatus.COMPLETED, value=os.getpid()))


def test_tables_created_by_several_processes_at_once() -> None:
    require_postgres()
    with PostgresDatabase() as db:  # fresh: no tables yet
        ctx = multiprocessing.get_context("spawn")
        ids = [_id() for _ in range(4)]
        procs = [ctx.Process(target=_first_use, args=(db.url, i)) for i in ids]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0]
        st = PostgresTaskState(db.url)
        assert all(st.get_outcome(i) is not None for i in ids)
        st.close()


def _child_writes(state: PostgresTaskState, task_id: str, server_pid: Any) -> None:
    with state.connection() as conn:
        server_pid.value = conn.info.backend_pid
    state.store_outcome(task_id, Outcome(TaskStatus.COMPLETED, value="child"))
    state.close()


def test_forked_child_opens_its_own_connection(state: PostgresTaskState) -> None:
    with state.connection() as conn:  # the parent holds an idle connection now
        parent_server_pid = conn.info.backend_pid
    ctx = multiprocessing.get_context("fork")
    child_server_pid = ctx.Value("i", 0)
    task_id = _id()
    child = ctx.Process(target=_child_writes, args=(state, task_id, child_server_pid))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert child_server_pid.value not in (0, parent_server_pid)  # never the parent's socket
    got = state.get_outcome(task_id)  # the parent's connection still works
    assert got is not None and got.value == "child"
    with state.connection() as conn:
        assert conn.info.backend_pid == parent_server_pid
