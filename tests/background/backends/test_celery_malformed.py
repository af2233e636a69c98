"""A malformed message on Celery ends as exactly one dead letter and leaves the queue: the
decision to dead-letter is final, whatever fails after it."""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from typing import Any

import orjson
import pytest
import redis
from celery import Celery

from pacificpy.background.backend import CeleryBackgroundBackend
from pacificpy.background.backends._celery_worker import deliver
from pacificpy.background.decorators import configure_background_tasks
from tests.conformance import tasks
from tests.conformance.harness import SIGNING_KEY
from tests.conformance.harness_celery import CeleryWorker
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_for

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

WAIT = 30.0


def make_backend(url: str) -> CeleryBackgroundBackend:
    backend = CeleryBackgroundBackend(celery_app=Celery("malformed", broker=url))
    configure_background_tasks(backend, signing_key=SIGNING_KEY)
    return backend


def signed(body: dict[str, Any]) -> bytes:
    raw = orjson.dumps(body)
    return b"pp1." + hmac.new(SIGNING_KEY, raw, hashlib.sha256).hexdigest().encode() + b"." + raw


def queue_is_empty(client: redis.Redis, backend: CeleryBackgroundBackend) -> bool:
    """Nothing waiting in the queue and nothing delivered but unacknowledged."""
    return backend.queue_length_sync("default") == 0 and client.hlen("unacked") == 0


def test_a_non_string_idempotency_key_is_one_dead_letter_and_leaves_the_queue(
    own_redis: RedisServer,
) -> None:
    backend = make_backend(own_redis.url)
    client = redis.Redis.from_url(own_redis.url)
    try:
        with CeleryWorker(own_redis.url, concurrency=1) as worker:
            worker.wait_ready()
            bad_ids = [uuid.uuid4().hex for _ in range(2)]
            # A task that fails and one whose arguments do not bind: ending either releases
            # the idempotency key. Before decode checked its type, releasing an integer key
            # failed after the dead letter was kept, and the message went back to loop.
            for task_id, name, args in [
                (bad_ids[0], tasks.fail_always.name, ["boom"]),
                (bad_ids[1], tasks.add.name, [1]),
            ]:
                body = {"v": 1, "id": task_id, "t": name, "a": args, "k": {}, "n": 1, "ik": 5}
                backend.submit_raw(signed(body))

            def letters() -> list[Any]:
                return [d for d in backend.dead_letters_sync(1000) if d.task_id in bad_ids]

            wait_for(lambda: len(letters()) >= 2, WAIT, what="the dead letters")
            wait_for(lambda: queue_is_empty(client, backend), WAIT, what="an empty queue")
            # The worker keeps taking work; had the bad messages gone back to the queue they
            # would be delivered again ahead of or around these.
            for i in range(3):
                assert tasks.add.delay(i, 1).result_sync(timeout=WAIT) == i + 1
            found = letters()
            assert len(found) == 2, [d.error for d in found]
            assert {d.reason for d in found} == {"rejected"}
            assert all("ik" in d.error for d in found)
            assert queue_is_empty(client, backend)
            assert worker.proc is not None and worker.proc.poll() is None
    finally:
        client.close()
        backend.shutdown_sync()


def test_a_dead_letter_decision_is_final_when_it_cannot_be_stored(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker's message handling with its Redis gone: the letter cannot be stored, and
    the message is still not sent back (no Reject), the letter is logged instead."""
    backend = make_backend(own_redis.url)
    try:
        own_redis.stop()
        marker = uuid.uuid4().hex
        with caplog.at_level(logging.ERROR, logger="pacificpy.background"):
            deliver(backend, f"garbage {marker}")  # raises Reject(requeue=True) if not final
        assert any(
            marker in r.getMessage() and "not requeued" in r.getMessage() for r in caplog.records
        )
    finally:
        backend.shutdown_sync()


def test_celery_calls_with_other_arguments_become_dead_letters(own_redis: RedisServer) -> None:
    """Celery's own ``send_task`` with no or two arguments: dead letters, not silent acks."""
    backend = make_backend(own_redis.url)
    client = redis.Redis.from_url(own_redis.url)
    try:
        with CeleryWorker(own_redis.url, concurrency=1) as worker:
            worker.wait_ready()
            for args, kwargs in [((), {}), (("a", "b"), {}), (("a",), {"extra": 1})]:
                backend.celery_app.send_task(tasks.add.name, args=args, kwargs=kwargs)

            wait_for(
                lambda: len(backend.dead_letters_sync(1000)) >= 3, WAIT, what="three dead letters"
            )
            wait_for(lambda: queue_is_empty(client, backend), WAIT, what="an empty queue")
            letters = backend.dead_letters_sync(1000)
            assert len(letters) == 3
            assert all(d.reason == "rejected" and not d.requeueable for d in letters)
            assert tasks.add.delay(1, 2).result_sync(WAIT) == 3  # and the worker goes on
    finally:
        backend.shutdown_sync()
