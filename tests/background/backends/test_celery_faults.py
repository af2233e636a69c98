"""Faults on the Celery backend, with real workers: a worker killed mid-task, Redis gone
while the app enqueues, bad messages, a graceful shutdown, poison messages, a task that
only the hard time limit ends."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from celery import Celery

from pacificpy.background import EnqueueError, TaskTimeout, _codec
from pacificpy.background.backend import CeleryBackgroundBackend
from pacificpy.background.decorators import configure_background_tasks
from pacificpy.background.task import Message, TaskEnvelope
from tests.background.backends import _celery_tasks
from tests.conformance import tasks
from tests.conformance.harness import SIGNING_KEY
from tests.conformance.harness_celery import CeleryWorker
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(120)

VISIBILITY = 1.0


def _backend(url: str, **options: Any) -> CeleryBackgroundBackend:
    celery_app = Celery("faults", broker=url)
    celery_app.conf.broker_transport_options = {"visibility_timeout": VISIBILITY}
    backend = CeleryBackgroundBackend(celery_app=celery_app, **options)
    configure_background_tasks(backend, signing_key=SIGNING_KEY)
    return backend


def test_sigkill_mid_task_runs_again_on_new_worker(own_redis: RedisServer) -> None:
    backend = _backend(own_redis.url)
    client = redis.Redis.from_url(own_redis.url)
    first = CeleryWorker(own_redis.url, concurrency=1, visibility_timeout=VISIBILITY).start()
    try:
        first.wait_ready()
        handle = tasks.sleep_for.delay(3.0)
        first.wait_for_log(f"[{handle.id}] received")
        first.signal(signal.SIGKILL, group=True)  # the whole worker: main and pool processes
        first.wait(10)
        # kombu gives an unacknowledged message back once it is older than the visibility
        # timeout, when a worker starts (and every few minutes after).
        wait_for(lambda: client.zcard("unacked_index") == 1, 30, what="the unacked message")
        delivered_at = client.zrange("unacked_index", 0, 0, withscores=True)[0][1]
        wait_for(lambda: time.time() > delivered_at + VISIBILITY + 0.1, 30, what="visibility")
        with CeleryWorker(own_redis.url, concurrency=1, visibility_timeout=VISIBILITY) as second:
            second.wait_ready()
            assert handle.result_sync(timeout=60) == 3.0
            assert f"[{handle.id}] received" in second.log()
    finally:
        first.close()
        backend.shutdown_sync()


async def test_redis_down_every_delay_fails_then_recovers(own_redis: RedisServer) -> None:
    backend = _backend(own_redis.url)
    try:
        await tasks.add.delay(1, 1)
        own_redis.stop()
        handles = [tasks.add.delay(i, i) for i in range(5)]
        for h in handles:
            with pytest.raises(EnqueueError) as info:
                await h
            assert info.value.task_id == h.id
        with pytest.raises(EnqueueError):
            await tasks.add.apply_async(args=(1, 2), countdown=1)
        own_redis.start()
        for i in range(3):
            await tasks.add.delay(i, 1)
        assert await backend.queue_length() == 3  # a restarted (non-persistent) Redis is empty
    finally:
        await backend.shutdown()


def test_redis_down_sync_delay_raises_at_once(own_redis: RedisServer) -> None:
    backend = _backend(own_redis.url)
    try:
        own_redis.stop()
        started = time.monotonic()
        with pytest.raises(EnqueueError):
            tasks.add.delay(1, 2)
        assert time.monotonic() - started < 15  # not Celery's connection retries
        own_redis.start()
        tasks.add.delay(1, 2)
        assert backend.queue_length_sync() == 1
    finally:
        backend.shutdown_sync()


@pytest.fixture
def worker(own_redis: RedisServer) -> Iterator[CeleryWorker]:
    with CeleryWorker(own_redis.url, concurrency=1) as w:
        w.wait_ready()
        yield w


def _letter_for(backend: CeleryBackgroundBackend, task_id: str):  # type: ignore[no-untyped-def]
    found = []

    def look() -> bool:
        found[:] = [d for d in backend.dead_letters_sync(1000) if d.task_id == task_id]
        return bool(found)

    wait_for(look, 30, what=f"a dead letter for {task_id}")
    return found[0]


def test_bad_messages_dead_letter_and_worker_keeps_running(
    own_redis: RedisServer, worker: CeleryWorker
) -> None:
    backend = _backend(own_redis.url)
    try:
        unknown = TaskEnvelope(uuid.uuid4().hex, "no.such.task", (1,), {})
        backend.submit_raw(_codec.encode(unknown, signing_key=SIGNING_KEY))
        good = TaskEnvelope(uuid.uuid4().hex, tasks.add.name, (1, 2), {})
        tampered = _codec.encode(good, signing_key=SIGNING_KEY).replace(b"[1,2]", b"[5,2]")
        backend.submit_raw(tampered)
        assert _letter_for(backend, unknown.task_id).reason == "unknown_task"
        letter = _letter_for(backend, good.task_id)
        assert letter.reason == "rejected" and "signature" in letter.error
        assert tasks.add.delay(2, 2).result_sync(timeout=30) == 4
        assert worker.proc is not None and worker.proc.poll() is None
    finally:
        backend.shutdown_sync()


def test_poison_message_goes_to_dead_letters(own_redis: RedisServer, worker: CeleryWorker) -> None:
    """A message the broker says is redelivered, whose deliveries are past max_deliveries,
    is a dead letter and does not run."""
    backend = _backend(own_redis.url)
    client = redis.Redis.from_url(own_redis.url)
    try:
        key = uuid.uuid4().hex
        env = TaskEnvelope(uuid.uuid4().hex, tasks.count.name, (key,), {})
        message = Message(env, _codec.encode(env, signing_key=SIGNING_KEY))
        queue, raw = backend._frame(message, None)
        frame = orjson.loads(raw)
        frame["headers"]["redelivered"] = True
        frame["properties"]["delivery_info"]["redelivered"] = True
        client.set(f"pacificpy:deliveries:{env.task_id}:1", backend.max_deliveries - 1)
        client.lpush(queue, orjson.dumps(frame))
        letter = _letter_for(backend, env.task_id)
        assert letter.reason == "poison"
        assert client.get(f"pacificpy-test:{key}") is None  # never ran
        # One delivery fewer runs normally.
        env2 = TaskEnvelope(uuid.uuid4().hex, tasks.count.name, (key,), {})
        message2 = Message(env2, _codec.encode(env2, signing_key=SIGNING_KEY))
        queue, raw = backend._frame(message2, None)
        frame = orjson.loads(raw)
        frame["properties"]["delivery_info"]["redelivered"] = True
        client.set(f"pacificpy:deliveries:{env2.task_id}:1", backend.max_deliveries - 2)
        client.lpush(queue, orjson.dumps(frame))
        assert backend.wait_result_sync(env2.task_id, timeout=30).value == 1
    finally:
        backend.shutdown_sync()


def test_sigterm_finishes_running_task_and_hands_back_the_rest(own_redis: RedisServer) -> None:
    backend = _backend(own_redis.url)
    first = CeleryWorker(own_redis.url, concurrency=1).start()
    try:
        first.wait_ready()
        running = tasks.sleep_for.delay(1.5)
        first.wait_for_log(f"[{running.id}] received")
        held = tasks.context.apply_async(countdown=2.5)  # prefetched, waiting for its ETA
        first.wait_for_log(f"[{held.id}] received")
        first.signal(signal.SIGTERM)
        assert first.wait(30) == 0
        assert running.result_sync(timeout=1) == 1.5  # finished before the worker left
        assert held.status_sync() is not None and not held.status_sync().is_final  # type: ignore[union-attr]
        with CeleryWorker(own_redis.url, concurrency=1) as second:
            second.wait_ready()
            ctx = held.result_sync(timeout=30)
            assert ctx["attempt"] == 1  # handed back without spending an attempt
    finally:
        first.close()
        backend.shutdown_sync()


def test_hard_time_limit_ends_a_task_that_ignores_the_soft_one(own_redis: RedisServer) -> None:
    """A sync task that catches ``SoftTimeLimitExceeded`` and sleeps on is killed by the
    hard limit (timeout + time_limit_grace, carried in the message): its result is
    ``TaskTimeout``, it is dead-lettered as a timeout, and the worker serves on."""
    backend = _backend(own_redis.url, time_limit_grace=0.3)
    client = redis.Redis.from_url(own_redis.url)
    include = ["--include", _celery_tasks.__name__]
    try:
        with CeleryWorker(own_redis.url, concurrency=1, extra_args=include) as worker:
            worker.wait_ready()
            key = uuid.uuid4().hex
            handle = _celery_tasks.ignore_soft_limit.delay(key)
            with pytest.raises(TaskTimeout):
                handle.result_sync(timeout=30)
            assert client.exists(_celery_tasks.SOFT_LIMIT_SEEN.format(key=key))  # seen, ignored
            assert _letter_for(backend, handle.id).reason == "timeout"
            hard = [line for line in worker.log().splitlines() if "Hard time limit" in line]
            assert any(handle.id in line for line in hard), worker.log()[-2000:]
            assert tasks.add.delay(2, 3).result_sync(timeout=30) == 5
    finally:
        backend.shutdown_sync()
