"""Tombstones in the ``TaskState`` contract: memory, Redis and PostgreSQL.

A tombstone outlives the process that laid it and the workers that heard it: a worker
started later (a fresh state, a fresh watcher) loads it; it expires after its TTL; a cancel
reaches a run of this process over pub/sub (LISTEN/NOTIFY) without waiting for a poll.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest

from pacificpy.background import cancellation
from pacificpy.background.backends.postgres import PostgresTaskState
from pacificpy.background.backends.postgres import cancels as pg_cancels
from pacificpy.background.backends.postgres import sql as pg_sql
from pacificpy.background.backends.redis import cancels
from pacificpy.background.backends.redis.state import RedisTaskState
from pacificpy.background.backends.state import MemoryTaskState
from pacificpy.background.task import Outcome
from pacificpy.types import TaskStatus
from tests.support.net import free_port
from tests.support.wait import wait_for


def cancelled() -> Outcome:
    return Outcome(TaskStatus.CANCELLED, error="cancelled", error_type="TaskCancelled")


def test_memory_tombstone_and_finished_task() -> None:
    now = [100.0]
    state = MemoryTaskState(clock=lambda: now[0])
    assert state.keeps_tombstones
    assert not state.is_cancelled("a")
    assert state.cancel("a", cancelled(), ttl=10)
    assert state.is_cancelled("a")
    assert state.get_outcome("a").status is TaskStatus.CANCELLED  # type: ignore[union-attr]
    assert not state.cancel("a", cancelled(), ttl=10)  # it has its outcome now
    state.store_outcome("b", Outcome(TaskStatus.COMPLETED, value=1))
    assert not state.cancel("b", cancelled(), ttl=10)
    assert not state.is_cancelled("b")
    assert state.get_outcome("b").status is TaskStatus.COMPLETED  # type: ignore[union-attr]
    now[0] += 11
    assert not state.is_cancelled("a")  # the TTL passed


@pytest.fixture
def prefix() -> str:
    return "tomb" + uuid.uuid4().hex[:8]


@pytest.fixture
def states(redis_url: str, prefix: str) -> Iterator[list[RedisTaskState]]:
    made: list[RedisTaskState] = []
    yield made
    for state in made:
        keys = list(state.sync.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            state.sync.delete(*keys)
        state.close()


def new_state(states: list[RedisTaskState], url: str, prefix: str) -> RedisTaskState:
    state = RedisTaskState(url, prefix=prefix)
    states.append(state)
    return state


def test_redis_tombstone_is_loaded_by_a_worker_started_later(
    states: list[RedisTaskState], redis_url: str, prefix: str
) -> None:
    web = new_state(states, redis_url, prefix)
    task_id = uuid.uuid4().hex
    assert web.cancel(task_id, cancelled(), ttl=60)
    assert not web.cancel(task_id, cancelled(), ttl=60)  # finished (cancelled) now
    restarted = new_state(states, redis_url, prefix)  # a worker that starts after the cancel
    assert restarted.is_cancelled(task_id)
    assert not restarted.is_cancelled(uuid.uuid4().hex)
    assert restarted.get_outcome(task_id).status is TaskStatus.CANCELLED  # type: ignore[union-attr]


def test_redis_cancel_of_a_finished_task_changes_nothing(
    states: list[RedisTaskState], redis_url: str, prefix: str
) -> None:
    state = new_state(states, redis_url, prefix)
    task_id = uuid.uuid4().hex
    state.store_outcome(task_id, Outcome(TaskStatus.COMPLETED, value=7))
    assert not state.cancel(task_id, cancelled(), ttl=60)
    assert state.get_outcome(task_id).value == 7  # type: ignore[union-attr]
    assert new_state(states, redis_url, prefix).is_cancelled(task_id) is False


def test_redis_tombstone_expires(states: list[RedisTaskState], redis_url: str, prefix: str) -> None:
    state = new_state(states, redis_url, prefix)
    task_id = uuid.uuid4().hex
    assert state.cancel(task_id, cancelled(), ttl=1.0)
    worker = new_state(states, redis_url, prefix)
    assert worker.is_cancelled(task_id)
    wait_for(lambda: not worker.is_cancelled(task_id), timeout=10, what="expiry")
    assert not new_state(states, redis_url, prefix).is_cancelled(task_id)


def test_redis_cancel_reaches_a_run_of_another_state_over_pubsub(
    states: list[RedisTaskState], redis_url: str, prefix: str
) -> None:
    worker = new_state(states, redis_url, prefix)
    task_id = uuid.uuid4().hex
    assert not worker.is_cancelled(task_id)  # the watcher listens from now on
    run = cancellation.register(task_id)
    try:
        # Another process's cancel: a state with its own connection, which delivers to
        # this process only through the channel (the run is not its to reach directly).
        other = new_state(states, redis_url, prefix)
        other.clients.script("cancel")(
            [other.outcome_key(task_id), other.keys.cancelled],
            [task_id, repr(time.time() + 60), repr(time.time()), b"{}", 60,
             other.keys.cancel_channel(cancels.database(other.clients))],
        )  # fmt: skip
        wait_for(lambda: run.cancelled, timeout=10, what="the cancel to arrive")
        assert worker.is_cancelled(task_id)
    finally:
        cancellation.unregister(run)


def test_redis_down_runs_the_task(
    states: list[RedisTaskState], prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cancels, "READY_WAIT", 0.2)
    state = new_state(states, f"redis://127.0.0.1:{free_port()}/0", prefix)
    started = time.monotonic()
    assert state.is_cancelled(uuid.uuid4().hex) is False
    assert time.monotonic() - started < 5
    state.watcher.stop()
    states.remove(state)


def test_a_forked_worker_starts_its_own_watcher(
    states: list[RedisTaskState], redis_url: str, prefix: str
) -> None:
    assert forked_child_sees_the_cancel(new_state(states, redis_url, prefix)) == 0


def forked_child_sees_the_cancel(state: RedisTaskState | PostgresTaskState) -> int:
    """Cancel a task, fork, and ask in the child (a prefork pool process asking about a
    delivery): its exit code, 0 when its own watcher (not the parent's) answered."""
    task_id = uuid.uuid4().hex
    assert not state.is_cancelled(task_id)
    assert state.cancel(task_id, cancelled(), ttl=60)
    wait_for(lambda: state.is_cancelled(task_id), timeout=10, what="the parent's watcher")
    pid = os.fork()
    if pid == 0:
        try:
            mine = state.is_cancelled(task_id) and state.watcher._pid == os.getpid()
            os._exit(0 if mine and state.watcher._ready.is_set() else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


# -- PostgreSQL: tombstones as rows, heard over LISTEN/NOTIFY ---------------------------------
@pytest.fixture
def pg_states(postgres_url: str) -> Iterator[list[PostgresTaskState]]:
    made: list[PostgresTaskState] = []
    yield made
    for state in made:
        state.close()


def new_pg(states: list[PostgresTaskState], url: str) -> PostgresTaskState:
    state = PostgresTaskState(url)
    states.append(state)
    return state


def test_postgres_tombstone_is_loaded_by_a_worker_started_later(
    pg_states: list[PostgresTaskState], postgres_url: str
) -> None:
    web = new_pg(pg_states, postgres_url)
    task_id = uuid.uuid4().hex
    assert web.keeps_tombstones
    assert web.cancel(task_id, cancelled(), ttl=60)
    assert not web.cancel(task_id, cancelled(), ttl=60)  # finished (cancelled) now
    restarted = new_pg(pg_states, postgres_url)  # a worker that starts after the cancel
    assert restarted.is_cancelled(task_id)
    assert restarted.watcher._ready.is_set()  # answered from the watcher's load
    assert not restarted.is_cancelled(uuid.uuid4().hex)
    assert restarted.get_outcome(task_id).status is TaskStatus.CANCELLED  # type: ignore[union-attr]


def test_postgres_cancel_of_a_finished_task_changes_nothing(
    pg_states: list[PostgresTaskState], postgres_url: str
) -> None:
    state = new_pg(pg_states, postgres_url)
    task_id = uuid.uuid4().hex
    state.store_outcome(task_id, Outcome(TaskStatus.COMPLETED, value=7))
    assert not state.cancel(task_id, cancelled(), ttl=60)
    assert state.get_outcome(task_id).value == 7  # type: ignore[union-attr]
    assert new_pg(pg_states, postgres_url).is_cancelled(task_id) is False
    assert state._is_buried(task_id) is False  # no tombstone was laid either


def test_postgres_tombstone_expires(pg_states: list[PostgresTaskState], postgres_url: str) -> None:
    state = new_pg(pg_states, postgres_url)
    task_id = uuid.uuid4().hex
    assert state.cancel(task_id, cancelled(), ttl=1.0)
    worker = new_pg(pg_states, postgres_url)
    assert worker.is_cancelled(task_id)
    wait_for(lambda: not worker.is_cancelled(task_id), timeout=10, what="expiry")
    assert not new_pg(pg_states, postgres_url).is_cancelled(task_id)
    assert state.expire() >= 1  # the expired tombstone's row is deleted


def test_postgres_cancel_reaches_a_run_of_another_state_over_notify(
    pg_states: list[PostgresTaskState], postgres_url: str
) -> None:
    worker = new_pg(pg_states, postgres_url)
    task_id = uuid.uuid4().hex
    assert not worker.is_cancelled(task_id)  # the watcher listens from now on
    run = cancellation.register(task_id)
    try:
        # Another process's cancel: a state with its own connection, which reaches this
        # process's run only through the notification (its cancel's own deliver is skipped).
        other = new_pg(pg_states, postgres_url)
        with other.connection() as conn, conn.transaction():
            conn.execute(pg_sql.BURY, (task_id, time.time() + 60))
            conn.execute(pg_sql.ANNOUNCE, (pg_sql.CANCEL_CHANNEL, f"{task_id} {time.time() + 60}"))
        # (The channel is the database's: a watcher of an earlier test, still stopping,
        # may deliver first; this state's own watcher must hear it too.)
        wait_for(lambda: task_id in worker.watcher._known, timeout=10, what="the notification")
        wait_for(lambda: run.cancelled, timeout=10, what="the run to be cancelled")
        assert worker.is_cancelled(task_id)
    finally:
        cancellation.unregister(run)


def test_postgres_watcher_reconnects_and_reloads(
    pg_states: list[PostgresTaskState], postgres_url: str
) -> None:
    worker = new_pg(pg_states, postgres_url)
    assert not worker.is_cancelled(uuid.uuid4().hex)
    listener = worker.watcher
    with worker.connection() as conn:  # cut the watcher's connection, as a restart would
        cut = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE %s "
            "AND datname = current_database() AND pid <> pg_backend_pid()",
            ("%FROM pacificpy_tombstones WHERE expires >%",),  # the watcher's last statement
        ).fetchall()
    assert cut and all(ok for (ok,) in cut)
    task_id = uuid.uuid4().hex
    web = new_pg(pg_states, postgres_url)
    assert web.cancel(task_id, cancelled(), ttl=60)
    wait_for(lambda: task_id in listener._known, timeout=20, what="the reload after reconnect")


def test_postgres_down_runs_the_task(
    pg_states: list[PostgresTaskState], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_cancels, "READY_WAIT", 0.2)
    state = PostgresTaskState(f"postgresql://postgres@127.0.0.1:{free_port()}/x", connect_timeout=1)
    started = time.monotonic()
    assert state.is_cancelled(uuid.uuid4().hex) is False
    assert time.monotonic() - started < 5
    state.watcher.stop()


def test_a_forked_postgres_worker_starts_its_own_watcher(
    pg_states: list[PostgresTaskState], postgres_url: str
) -> None:
    assert forked_child_sees_the_cancel(new_pg(pg_states, postgres_url)) == 0
