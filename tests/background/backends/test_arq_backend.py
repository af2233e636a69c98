"""The ARQ backend: job format, in-process workers (``Worker(burst=True)``) for the ARQ
layer, and the guide's commands as real subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from arq.connections import RedisSettings
from arq.worker import Worker, create_worker

from pacificpy.background import TaskStatus, current_task
from pacificpy.background.backends._arq_worker import JOB_NAME, make_job_deserializer
from pacificpy.background.backends.arq_backend import ARQBackgroundBackend, arq_queue_name
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.errors import ConfigurationError, EnqueueError, TaskFailed
from tests.background.backends._arq_procs import ARQ, PACIFICPY, Proc, pid_alive, run_burst, running
from tests.support.net import free_port
from tests.support.redis_server import RedisServer

pytestmark = [
    pytest.mark.redis,
    # arq 0.28's Worker.close() calls redis-py's deprecated close()
    pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning"),
]

DB = 2
WAIT = 30.0


@background
def arq_add(a: int, b: int) -> int:
    return a + b


@background
async def arq_async_context() -> dict[str, Any]:
    ctx = current_task()
    assert ctx is not None
    return {"id": ctx.id, "attempt": ctx.attempt}


@background
async def arq_wait_for_flag(url: str, flag: str) -> int:
    """Wait while ``flag`` exists (the test holds the task running with it)."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        await client.set(f"{flag}:started", 1)
        while await client.exists(flag):
            await asyncio.sleep(0.02)
    finally:
        await client.aclose()
    ctx = current_task()
    assert ctx is not None
    return ctx.attempt


@background
def arq_huge_failure() -> None:
    raise ValueError("x" * 5_000_000)


@pytest.fixture
def db_url(redis_server: RedisServer) -> str:
    url = redis_server.fresh_db_url(DB)
    return url


@pytest.fixture
def backend(db_url: str) -> Iterator[ARQBackgroundBackend]:
    b = ARQBackgroundBackend(redis_settings=RedisSettings.from_dsn(db_url), shutdown_timeout=1.0)
    configure_background_tasks(b, signing_key=b"arq-backend-test-signing-key-0123")
    yield b
    b.shutdown_sync()


async def _burst(backend: ARQBackgroundBackend, **overrides: Any) -> Worker:
    worker: Worker = await run_burst(backend, **overrides)
    return worker


def test_queue_names() -> None:
    assert arq_queue_name("default") == "arq:queue"
    assert arq_queue_name("emails") == "arq:queue:emails"


def test_constructor_checks() -> None:
    with pytest.raises(ConfigurationError):
        ARQBackgroundBackend(max_jobs=0)
    with pytest.raises(ConfigurationError):
        ARQBackgroundBackend(poll_delay=0)


def test_defaults_poll_fast() -> None:
    settings = ARQBackgroundBackend().worker_settings()
    assert settings.poll_delay <= 0.05
    assert settings.max_jobs == 10
    assert settings.queue_name == "arq:queue"


def test_enqueue_writes_an_arq_job(backend: ARQBackgroundBackend, db_url: str) -> None:
    handle = arq_add.delay(1, 2)
    client = redis.Redis.from_url(db_url)
    raw = client.get(f"arq:job:{handle.id}")
    assert raw is not None
    assert client.zscore("arq:queue", handle.id) is not None
    job = make_job_deserializer(False)(raw)
    assert job["f"] == JOB_NAME
    assert job["a"] == (raw,)
    assert abs(job["et"] / 1000 - time.time()) < 60
    assert backend.queue_length_sync() == 1
    assert handle.status_sync() is TaskStatus.QUEUED


def test_duplicate_job_id_is_not_enqueued_twice(backend: ARQBackgroundBackend) -> None:
    first = arq_add.apply_async(args=(1, 1), task_id="fixed-id")
    second = arq_add.apply_async(args=(2, 2), task_id="fixed-id")
    assert first.id == second.id == "fixed-id"
    assert backend.queue_length_sync() == 1


async def test_in_process_worker_runs_sync_and_async(backend: ARQBackgroundBackend) -> None:
    sync_handle = await arq_add.delay(2, 3)
    async_handle = await arq_async_context.delay()
    await _burst(backend)
    assert await sync_handle.result(timeout=WAIT) == 5
    ctx = await async_handle.result(timeout=WAIT)
    assert ctx == {"id": async_handle.id, "attempt": 1}
    assert await sync_handle.status() is TaskStatus.COMPLETED
    assert await backend.queue_length() == 0


async def test_a_5mb_error_costs_kilobytes_in_redis(
    backend: ARQBackgroundBackend, db_url: str
) -> None:
    """The result key and the dead letter keep capped error text, never the whole 5 MB."""
    handle = await arq_huge_failure.delay()
    await _burst(backend)
    with pytest.raises(TaskFailed, match="ValueError: xxx"):
        await handle.result(timeout=WAIT)
    client = redis.Redis.from_url(db_url)
    sizes = {key: client.memory_usage(key) or 0 for key in client.scan_iter()}
    assert any(b"result" in key for key in sizes), sizes
    assert max(sizes.values()) < 64 * 1024, sizes


async def test_countdown_is_an_arq_deferred_job(backend: ARQBackgroundBackend) -> None:
    handle = await arq_add.apply_async(args=(1, 1), countdown=60)
    score = await backend.state.aio().zscore("arq:queue", handle.id)
    assert score is not None
    assert score / 1000 > time.time() + 50


async def test_malformed_jobs_become_dead_letters(
    backend: ARQBackgroundBackend, db_url: str
) -> None:
    client = redis.Redis.from_url(db_url)
    now = int(time.time() * 1000)
    bad = {
        "garbage": b"\x00\xff garbage job",
        "pickle": pickle.dumps({"f": JOB_NAME, "a": [], "k": {}, "t": 1, "et": now}),
        "wrongjson": b'{"f": 1',
    }
    for job_id, value in bad.items():
        client.set(f"arq:job:{job_id}", value)
        client.zadd("arq:queue", {job_id: now})
    good = await arq_add.delay(20, 22)
    await _burst(backend)
    assert await good.result(timeout=WAIT) == 42
    letters = await backend.dead_letters()
    assert len(letters) == 3
    assert {d.reason for d in letters} == {"rejected"}
    assert any("garbage job" in d.data for d in letters)


async def test_poison_after_max_deliveries(backend: ARQBackgroundBackend, db_url: str) -> None:
    """ARQ counts every start of a job in arq:retry:<id>; starts that never finished (their
    worker died) are set here directly, as max_deliveries dead workers would leave them.
    tests/background/backends/test_arq_faults.py kills real workers."""
    handle = await arq_add.delay(1, 2)
    redis.Redis.from_url(db_url).set(f"arq:retry:{handle.id}", backend.max_deliveries)
    await _burst(backend)
    with pytest.raises(TaskFailed) as info:
        await handle.result(timeout=WAIT)
    assert "poison" in str(info.value)
    (letter,) = await backend.dead_letters()
    assert letter.reason == "poison"
    assert letter.task_id == handle.id
    assert await handle.status() is TaskStatus.DEAD


async def test_graceful_shutdown_hands_back_without_spending(
    backend: ARQBackgroundBackend, db_url: str
) -> None:
    client = redis.Redis.from_url(db_url)
    flag = "hold"
    client.set(flag, 1)
    handle = await arq_wait_for_flag.delay(db_url, flag)
    worker = create_worker(backend.worker_settings(job_completion_wait=0.2), handle_signals=False)
    run = asyncio.ensure_future(worker.async_run())
    deadline = time.monotonic() + WAIT
    while not client.exists(f"{flag}:started"):
        assert time.monotonic() < deadline, "the task did not start"
        await asyncio.sleep(0.02)
    worker.handle_sig_wait_for_completion(signal.SIGTERM)
    with contextlib.suppress(asyncio.CancelledError):
        await run
    await worker.close()
    # Handed back: still queued, not in progress, its delivery given back, attempt 1.
    assert client.zscore("arq:queue", handle.id) is not None
    assert not client.exists(f"arq:in-progress:{handle.id}")
    assert int(client.get(f"arq:retry:{handle.id}") or 0) == 0
    client.delete(flag)
    await _burst(backend)
    assert await handle.result(timeout=WAIT) == 1


def test_enqueue_error_without_loop_when_redis_is_down() -> None:
    dead = ARQBackgroundBackend(redis_settings=RedisSettings(host="127.0.0.1", port=free_port()))
    configure_background_tasks(dead)
    with pytest.raises(EnqueueError) as info:
        arq_add.delay(1, 2)
    assert info.value.cause is not None
    dead.shutdown_sync()


async def test_enqueue_error_on_await_when_redis_is_down() -> None:
    dead = ARQBackgroundBackend(redis_settings=RedisSettings(host="127.0.0.1", port=free_port()))
    configure_background_tasks(dead)
    handle = arq_add.delay(1, 2)
    with pytest.raises(EnqueueError):
        await handle


# -- the guide's commands, as real subprocesses ---------------------------------------------
@pytest.fixture
def guide(redis_server: RedisServer, tmp_path: Path) -> Iterator[dict[str, Any]]:
    if not redis_server.is_running():
        redis_server.start()
    os.environ["ARQ_GUIDE_REDIS_PORT"] = str(redis_server.port)
    redis.Redis.from_url(redis_server.url).delete("arq:queue")
    from tests.apps import arq_guide_app

    configure_background_tasks(arq_guide_app.arq_backend)
    yield {"env": {"ARQ_GUIDE_REDIS_PORT": str(redis_server.port)}, "app": arq_guide_app}
    arq_guide_app.arq_backend.shutdown_sync()


async def test_guide_snippet_with_stock_arq_command(guide: dict[str, Any], tmp_path: Path) -> None:
    app = guide["app"]
    cmd = [*ARQ, "tests.apps.arq_guide_app.WorkerSettings"]
    with running(cmd, tmp_path / "arq.log", guide["env"]):
        transport = httpx.ASGITransport(app=app.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post(
                "/notifications", json={"to": "a@example.com", "subject": "hi", "body": "..."}
            )
        assert response.status_code == 200
        assert response.json()["status"] == "Email queued"
        outcome = await app.arq_backend.wait_result(response.json()["id"], timeout=WAIT)
        assert outcome.value["to"] == "a@example.com"
        assert await (await app.ping.delay(7)).result(timeout=WAIT) == 7


async def test_pacificpy_worker_runs_and_supervises_four(
    guide: dict[str, Any], tmp_path: Path
) -> None:
    app = guide["app"]
    cmd = [*PACIFICPY, "worker", "tests.apps.arq_guide_app", "--workers", "4"]
    proc = Proc(cmd, tmp_path / "supervisor.log", guide["env"])
    try:
        proc.wait_for("Starting worker", 4)
        pids = [int(p) for p in proc.wait_for(r"started ARQ worker \d+ \(pid (\d+)\)", 4)]
        assert len(set(pids)) == 4
        handles = [await app.send_email.delay(f"{i}@example.com", "s", "b") for i in range(12)]
        results = [await h.result(timeout=WAIT) for h in handles]
        assert {r["to"] for r in results} == {f"{i}@example.com" for i in range(12)}
        assert {r["pid"] for r in results} <= set(pids)
        # A worker that dies is restarted, with a message.
        os.kill(pids[0], signal.SIGKILL)
        proc.wait_for(rf"ARQ worker 0 \(pid {pids[0]}\) exited with code -9.*restarting", 1)
        new = [int(p) for p in proc.wait_for(r"started ARQ worker \d+ \(pid (\d+)\)", 5)]
        assert new[4] not in pids
        proc.wait_for("Starting worker", 5)
        assert await (await app.ping.delay(3)).result(timeout=WAIT) == 3
        # SIGTERM stops them all, cleanly.
        assert proc.stop(signal.SIGTERM, timeout=30) == 0
        assert "all ARQ workers stopped" in proc.text()
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in new[1:]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(pid_alive(p) for p in new[1:])
        assert len(re.findall("shutdown on SIGTERM, wait complete", proc.text())) == 4
    finally:
        proc.stop(signal.SIGKILL)
