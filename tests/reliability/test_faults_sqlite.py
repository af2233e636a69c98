"""Faults of the SQLite backend, batch by batch, with counts: nothing committed is lost.

* the app (uvicorn, in-process workers) SIGKILLed with tasks queued and running, then
  started again on the same file;
* one of two worker processes SIGKILLed while it runs tasks: the other takes them over
  once their leases expire;
* several processes enqueueing while two worker processes consume.

Leases are 1 s here (30 s by default), so a killed process's tasks run again within
seconds. Every task increments a counter of its own in the suite's Redis (as in
``test_faults.py``), and each test writes its row to the reliability JSON.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from pacificpy.background.decorators import configure_background_tasks
from tests.background.backends._arq_procs import Proc
from tests.conformance import tasks
from tests.conformance.harness import SIGNING_KEY
from tests.reliability import _support
from tests.reliability import tasks as rel_tasks
from tests.reliability.apps.backends import make_sqlite
from tests.support.uvicorn_server import serve_app
from tests.support.wait import wait_for

pytestmark = [pytest.mark.redis, pytest.mark.timeout(240)]

APP = "tests.reliability.apps.load_app:app"
WORKER = [sys.executable, "-m", "pacificpy.background.backends.sqlite.worker"]
WORKERS_MODULE = "tests.reliability.apps.sqlite_workers"
WAIT = 90.0
READY = r"SQLite worker \(pid"


@pytest.fixture
def sqlite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "tasks.db"
    monkeypatch.setenv("PACIFICPY_REL_SQLITE", str(path))
    return path


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.popen.wait()


def _started(counter: redis.Redis, gate: str) -> int:
    return int(counter.get(f"pacificpy-test:started:{gate}") or 0)


def _worker(procs: list[Proc], tmp_path: Path, env: dict[str, str]) -> Proc:
    proc = Proc([*WORKER, WORKERS_MODULE], tmp_path / f"worker-{len(procs)}.log", env)
    procs.append(proc)
    proc.wait_for(READY)
    return proc


def test_app_sigkill_with_tasks_queued_and_running_then_restart(
    sqlite_file: Path, counter: redis.Redis, rel_redis_url: str
) -> None:
    keys = _support.new_keys(120, "appkill-sqlite")
    free, held = keys[:24], keys[24:]
    gate = f"gate-{keys[0]}"
    counter.set(f"pacificpy-test:{gate}", 1)
    env = {
        "PACIFICPY_REL_BACKEND": "sqlite",
        "PACIFICPY_TEST_REDIS": rel_redis_url,
        "PACIFICPY_REL_SQLITE": str(sqlite_file),
    }
    with serve_app(APP, env=env) as (base_url, proc):
        with httpx.Client(base_url=base_url, timeout=60.0) as client:
            assert client.post("/enqueue-many", json={"keys": free}).status_code == 200
            _support.wait_counts(counter, free, timeout=WAIT)
            answer = client.post("/enqueue-gated", json={"keys": held, "gate": gate})
            assert answer.status_code == 200
        wait_for(lambda: _started(counter, gate) >= 4, WAIT, what="4 gated tasks running")
        proc.send_signal(signal.SIGKILL)  # the app, its workers and its queue, at once
        proc.wait(10)
    before = _support.read_counts(counter, keys)
    counter.delete(f"pacificpy-test:{gate}")
    with serve_app(APP, env=env):  # the same app on the same file, started again
        tally = _support.wait_counts(counter, keys, timeout=WAIT)
    _support.record(
        "sqlite",
        "app SIGKILL, tasks queued and running; restart",
        tally,
        done_before_kill=sum(1 for c in before if c),
        running_at_kill=4,
    )
    assert tally.lost == 0, f"{tally.lost} tasks never ran, e.g. {tally.missing}"
    assert sum(1 for c in before if c) == len(free)


def test_one_of_two_worker_processes_sigkilled(
    sqlite_file: Path, counter: redis.Redis, rel_redis_url: str, procs: list[Proc], tmp_path: Path
) -> None:
    env = {"PACIFICPY_TEST_REDIS": rel_redis_url, "PACIFICPY_REL_SQLITE": str(sqlite_file)}
    backend = make_sqlite(consume=False)
    configure_background_tasks(backend, signing_key=SIGNING_KEY)
    victim, survivor = _worker(procs, tmp_path, env), _worker(procs, tmp_path, env)
    keys = _support.new_keys(120, "workerkill-sqlite")
    free, held = keys[:24], keys[24:]
    gate = f"gate-{keys[0]}"
    for key in free:
        tasks.count.delay(key)
    _support.wait_counts(counter, free, timeout=WAIT)
    counter.set(f"pacificpy-test:{gate}", 1)
    for key in held:
        rel_tasks.gated_count.delay(key, gate)
    wait_for(lambda: _started(counter, gate) >= 8, WAIT, what="both workers' slots busy")
    os.kill(victim.pid, signal.SIGKILL)
    victim.popen.wait(10)
    counter.delete(f"pacificpy-test:{gate}")
    tally = _support.wait_counts(counter, keys, timeout=WAIT)
    _support.record(
        "sqlite",
        "worker SIGKILL (1 of 2 processes)",
        tally,
        done_before_kill=len(free),
        survivor_alive=survivor.popen.poll() is None,
    )
    assert tally.lost == 0, f"{tally.lost} tasks never ran, e.g. {tally.missing}"
    assert survivor.popen.poll() is None
    assert backend.queue.pending() == 0
    backend.db.close()


PRODUCER = """
import json, sys
import tests.reliability.apps.sqlite_workers
from tests.conformance import tasks
for key in json.loads(open(sys.argv[1]).read()):
    tasks.count.delay(key)
print("enqueued", flush=True)
"""


def test_several_processes_enqueue_while_two_consume(
    sqlite_file: Path, counter: redis.Redis, rel_redis_url: str, procs: list[Proc], tmp_path: Path
) -> None:
    env = {"PACIFICPY_TEST_REDIS": rel_redis_url, "PACIFICPY_REL_SQLITE": str(sqlite_file)}
    _worker(procs, tmp_path, env)
    _worker(procs, tmp_path, env)
    keys = _support.new_keys(900, "multiproc-sqlite")
    producers = []
    started = time.perf_counter()
    for i in range(3):
        batch = tmp_path / f"keys-{i}.json"
        batch.write_text(json.dumps(keys[i::3]))
        producer = Proc([sys.executable, "-c", PRODUCER, str(batch)], tmp_path / f"p{i}.log", env)
        procs.append(producer)
        producers.append(producer)
    for producer in producers:
        assert producer.popen.wait(WAIT) == 0, producer.text()[-3000:]
    tally = _support.wait_counts(counter, keys, timeout=WAIT)
    _support.record(
        "sqlite",
        "3 processes enqueue, 2 worker processes consume",
        tally,
        seconds=round(time.perf_counter() - started, 2),
    )
    assert tally.lost == 0, f"{tally.lost} tasks never ran, e.g. {tally.missing}"
    assert tally.duplicated == 0, "no process died: no task may run twice"
