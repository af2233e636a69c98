"""The SQLite backend beyond the conformance suite: durability, leases and their heartbeat,
redelivery, the poison guard, retries that hold no worker, retention.

Each test has a file of its own (``tmp_path``); "another process" is another backend
object on the same file with a lease owner of its own, which is what a process is to the
file (the fault tests in ``tests/reliability/test_faults_sqlite.py`` kill real ones).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pacificpy.background import TaskStatus, current_task, get_handle
from pacificpy.background.backend import SQLiteBackgroundBackend
from pacificpy.background.backends.sqlite import sql
from pacificpy.background.backends.sqlite.queue import SQLiteQueue
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.errors import EnqueueError
from tests.support.wait import wait_for

WAIT = 30.0
runs: collections.Counter[str] = collections.Counter()
started: dict[str, float] = {}
_lock = threading.Lock()


def _ran(key: str) -> None:
    with _lock:
        runs[key] += 1
        started.setdefault(key, time.time())


@background
def add(a: int, b: int) -> int:
    return a + b


@background
def count(key: str) -> int:
    _ran(key)
    return runs[key]


@background
def keep(key: str) -> str:
    """Counts its run; its outcome is as big as its argument."""
    _ran(key)
    return key


@background
def sleep_count(key: str, seconds: float) -> int:
    _ran(key)
    time.sleep(seconds)
    return runs[key]


@background(retries=1, retry_backoff=1.5, retry_jitter=False)
def fail_first(key: str) -> int:
    _ran(key)
    ctx = current_task()
    assert ctx is not None
    if ctx.attempt == 1:
        raise ConnectionError("first attempt fails")
    return ctx.attempt


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "tasks.db"


@pytest.fixture
def backends() -> Iterator[list[SQLiteBackgroundBackend]]:
    """Backends a test makes; each is shut down afterwards."""
    made: list[SQLiteBackgroundBackend] = []
    yield made
    for backend in made:
        backend.shutdown_sync(timeout=5)


def _make(
    made: list[SQLiteBackgroundBackend], path: Path, **options: Any
) -> SQLiteBackgroundBackend:
    options.setdefault("shutdown_timeout", 5.0)
    backend = SQLiteBackgroundBackend(path, options.pop("max_workers", 2), **options)
    made.append(backend)
    return backend


def _key(name: str) -> str:
    return f"{name}-{time.monotonic_ns()}"


def _dead_process(path: Path, key: str) -> SQLiteQueue:
    """The queue of a process that published ``count(key)``, then will lease and die."""
    producer = SQLiteBackgroundBackend(path, consume=False)
    configure_background_tasks(producer)
    count.delay(key)
    return SQLiteQueue(producer.db, owner="a-process-that-died")


# -- durability ----------------------------------------------------------------------------


def test_a_committed_task_runs_after_a_restart(db_path: Path, backends: list[Any]) -> None:
    producer = _make(backends, db_path, consume=False)
    configure_background_tasks(producer)
    handle = add.delay(2, 3)  # returns once the row is committed
    assert producer.queue_length_sync() == 1
    assert producer.get_status_sync(handle.id) is TaskStatus.QUEUED
    producer.db.close()  # the producing process is gone; its row is in the file

    consumer = _make(backends, db_path)
    configure_background_tasks(consumer)
    consumer.start()  # an app starts it at startup; a script enqueuing, at its first task
    assert get_handle(handle.id).result_sync(WAIT) == 5
    assert consumer.get_status_sync(handle.id) is TaskStatus.COMPLETED
    assert consumer.queue.pending() == 0  # the row is gone with its run


def test_a_countdown_waits_in_the_file(db_path: Path, backends: list[Any]) -> None:
    producer = _make(backends, db_path, consume=False)
    configure_background_tasks(producer)
    sent = time.time()
    handle = add.apply_async(args=(1, 1), countdown=1.0)
    assert producer.queue_length_sync() == 1
    consumer = _make(backends, db_path)
    consumer.start()
    assert consumer.wait_result_sync(handle.id, WAIT).value == 2
    assert consumer.state.get_outcome(handle.id).finished_at >= sent + 0.9  # type: ignore[union-attr]


# -- leases --------------------------------------------------------------------------------


def test_an_expired_lease_is_delivered_again(db_path: Path, backends: list[Any]) -> None:
    """A process leased the row and died: the row runs again once the lease has expired."""
    key = _key("expired")
    dead = _dead_process(db_path, key)
    leased = dead.lease(10, None, lease=1.0)  # the dead process's lease, never renewed
    assert len(leased) == 1
    expires = time.time() + 1.0
    consumer = _make(backends, db_path, lease=1.0, heartbeat=0.2, poll_interval=0.05)
    configure_background_tasks(consumer)
    consumer.start()
    assert consumer.wait_result_sync(leased[0].task_id, WAIT).value == 1
    assert started[key] >= expires - 0.05  # not before the lease ran out
    assert runs[key] == 1


def test_the_heartbeat_keeps_a_long_task_leased(db_path: Path, backends: list[Any]) -> None:
    """A task running three leases long is not delivered to another process meanwhile."""
    key = _key("long")
    holder = _make(backends, db_path, lease=0.6, heartbeat=0.15)
    configure_background_tasks(holder)
    handle = sleep_count.delay(key, 2.5)
    wait_for(lambda: runs[key] == 1, WAIT, what="the task to start")
    other = _make(backends, db_path, lease=0.6, heartbeat=0.15)
    other.start()  # polls the file, and would take an expired row
    assert holder.wait_result_sync(handle.id, WAIT).value == 1
    assert runs[key] == 1


def test_past_max_deliveries_the_message_is_poison(db_path: Path, backends: list[Any]) -> None:
    key = _key("poison")
    dead = _dead_process(db_path, key)
    for _ in range(2):  # two deliveries, each of a process that died with it
        (row,) = dead.lease(10, None, lease=-1.0)
        assert dead.expire_leases() == 1
    consumer = _make(backends, db_path, max_deliveries=2)
    configure_background_tasks(consumer)
    consumer.start()
    outcome = consumer.wait_result_sync(row.task_id, WAIT)
    assert outcome.status is TaskStatus.DEAD
    (letter,) = consumer.dead_letters_sync()
    assert letter.reason == "poison"
    assert "delivered 2 times" in letter.error
    assert runs[key] == 0
    assert consumer.queue.pending() == 0


def test_shutdown_hands_back_leased_rows(db_path: Path, backends: list[Any]) -> None:
    """Rows leased but not run when a process stops wait again at once (no lease expiry)."""
    first = _make(backends, db_path, max_workers=1, prefetch=3, lease=60.0)
    configure_background_tasks(first)
    key = _key("slow")
    sleep_count.delay(key, 1.5)
    later = [add.delay(i, i) for i in range(3)]
    wait_for(lambda: runs[key] == 1, WAIT, what="the slow task to start")
    wait_for(lambda: first.queue_length_sync() == 0, WAIT, what="all rows leased")
    first.shutdown_sync(timeout=0.2)  # the slow task holds the one worker past it
    second = _make(backends, db_path)
    configure_background_tasks(second)
    second.start()
    assert [second.wait_result_sync(h.id, 10).value for h in later] == [0, 2, 4]


# -- retries and retention -----------------------------------------------------------------


def test_a_retry_waits_as_a_row_and_holds_no_worker(db_path: Path, backends: list[Any]) -> None:
    backend = _make(backends, db_path, max_workers=1, prefetch=0)
    configure_background_tasks(backend)
    key = _key("retry")
    retried = fail_first.delay(key)
    wait_for(lambda: runs[key] == 1, WAIT, what="the first attempt")
    wait_for(lambda: backend.queue_length_sync() == 1, WAIT, what="the retry row")
    assert backend.queue.holder(retried.id) == (True, None)  # waiting, leased by nobody
    other = add.delay(20, 22)  # the only worker is free for it meanwhile
    assert backend.wait_result_sync(other.id, WAIT).value == 42
    assert backend.state.get_outcome(retried.id) is None  # the retry is still waiting
    assert backend.wait_result_sync(retried.id, WAIT).value == 2


def test_outcomes_keys_and_counts_expire(db_path: Path, backends: list[Any]) -> None:
    backend = _make(backends, db_path, result_ttl=0.5)
    configure_background_tasks(backend)
    handle = add.apply_async(args=(1, 2), idempotency_key=_key("idem"))
    assert backend.wait_result_sync(handle.id, WAIT).value == 3
    backend.idempotency_ttl = 0.5
    add.apply_async(args=(1, 2), idempotency_key=_key("idem2"))
    backend.state.count_delivery("some-task", 1)
    time.sleep(0.6)  # the TTLs under test are wall-clock expiries in the file
    assert backend.state.get_outcome(handle.id) is None  # expired: not served
    assert backend.state.expire() >= 3  # outcome(s), key, delivery count: deleted
    assert (
        backend.db.one("SELECT count(*) FROM pacificpy_outcomes WHERE expires <= ?", (time.time(),))
        == 0
    )


def test_the_file_does_not_grow_under_steady_load(db_path: Path, backends: list[Any]) -> None:
    backend = _make(backends, db_path, max_workers=4, result_ttl=0.01)
    configure_background_tasks(backend)
    sizes = []
    for _ in range(4):
        keys = [_key("steady") + "x" * 2000 for _ in range(300)]
        for key in keys:
            keep.delay(key)
        assert backend.join(WAIT)
        time.sleep(0.02)
        backend._retain()
        backend.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        sizes.append(db_path.stat().st_size)
        assert all(runs[k] == 1 for k in keys)
    # Steady from the second round on: the first may end with its free pages given back
    # (the retention pass vacuums only past a threshold of free pages), later ones reuse
    # the pages the first round's rows left.
    assert sizes[-1] <= max(sizes[:2]) * 1.2, sizes


# -- the file's write path -----------------------------------------------------------------


def test_a_task_id_is_unique_among_waiting_tasks(db_path: Path, backends: list[Any]) -> None:
    backend = _make(backends, db_path, consume=False)
    configure_background_tasks(backend)
    first = add.apply_async(args=(1, 1), task_id="my-own-id")
    with pytest.raises(EnqueueError, match="already queued or running"):
        add.apply_async(args=(2, 2), task_id="my-own-id")
    assert backend.queue_length_sync() == 1
    assert first.id == "my-own-id"


def test_group_commit_keeps_each_threads_work_apart(db_path: Path, backends: list[Any]) -> None:
    """Threads' writes share commits; one that fails rolls back only its own part."""
    backend = _make(backends, db_path, consume=False)
    db = backend.db
    db.check()
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        start.wait()
        for j in range(50):

            def write(i: int = i, j: int = j) -> None:
                db.write(sql.CLAIM_KEY, ("t", f"{i}-{j}", "id", time.time() + 60, time.time()))
                if (i + j) % 7 == 0:
                    raise ValueError(f"{i}-{j}")

            try:
                db.combined(write)
            except ValueError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    failed = {str(e) for e in errors}
    kept = {r[0] for r in db.execute("SELECT key FROM pacificpy_idem_keys WHERE name = 't'")}
    every = {f"{i}-{j}" for i in range(8) for j in range(50)}
    assert failed == {k for k in every if sum(map(int, k.split("-"))) % 7 == 0}
    assert kept == every - failed
