"""Celery on RabbitMQ, against the machine's RabbitMQ (a virtual host of this module's own):
publisher confirms, delays in delay queues (never an ETA held by a worker), queue length by
a passive declare, the poison guard from the broker's delivery count."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from celery import Celery
from kombu import Exchange, Queue

from pacificpy.background import EnqueueError, _codec
from pacificpy.background.backend import CeleryBackgroundBackend
from pacificpy.background.backends._celery_amqp import delay_ms, delay_queue_name
from pacificpy.background.backends._celery_publish import celery_body, celery_headers
from pacificpy.background.decorators import configure_background_tasks
from pacificpy.background.task import Message, TaskEnvelope
from tests.conformance import tasks
from tests.conformance.harness import SIGNING_KEY
from tests.conformance.harness_celery import CeleryWorker
from tests.support.rabbitmq import RabbitVhost
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def backend(rabbit: RabbitVhost, redis_url: str) -> Iterator[CeleryBackgroundBackend]:
    celery_app = Celery("rabbit-test", broker=rabbit.url())
    celery_app.conf.task_queues = [
        Queue("default", Exchange("default"), routing_key="default"),
        # RabbitMQ refuses (nacks) a publish past one message: only a confirm shows it.
        Queue(
            "tiny",
            Exchange("tiny"),
            routing_key="tiny",
            queue_arguments={"x-max-length": 1, "x-overflow": "reject-publish"},
        ),
    ]
    backend = CeleryBackgroundBackend(celery_app, redis_url=redis_url)
    configure_background_tasks(backend, signing_key=SIGNING_KEY)
    yield backend
    backend.shutdown_sync()


def _queue() -> str:
    return f"q-{uuid.uuid4().hex[:8]}"


def test_delay_rounds_up_never_down() -> None:
    for seconds in (0.0001, 0.05, 1.0, 1.5, 7.3, 3600.0, 86_400.0 * 30):
        ms = delay_ms(seconds)
        assert ms >= seconds * 1000
        assert ms <= seconds * 1000 * (1 + 1 / 32) + 1
    # A bounded set of delay queues: 1,000 different delays of up to 10 minutes share few.
    assert len({delay_ms(i * 0.6) for i in range(1, 1001)}) < 250


def test_publish_is_confirmed(backend: CeleryBackgroundBackend) -> None:
    assert backend.celery_app.conf.broker_transport_options["confirm_publish"] is True
    tasks.add.apply_async(args=(1, 1), queue="tiny")
    assert backend.queue_length_sync("tiny") == 1
    with pytest.raises(EnqueueError) as info:
        tasks.add.apply_async(args=(2, 2), queue="tiny")  # nacked: the queue is full
    assert "amqp://" in str(info.value) and "guest:guest" not in str(info.value)
    assert backend.queue_length_sync("tiny") == 1


def test_user_confirm_setting_is_kept(rabbit: RabbitVhost) -> None:
    celery_app = Celery("mine", broker=rabbit.url())
    celery_app.conf.broker_transport_options = {"confirm_publish": False}
    CeleryBackgroundBackend(celery_app, redis_url="redis://x").shutdown_sync()
    assert celery_app.conf.broker_transport_options["confirm_publish"] is False


def test_queue_length_of_a_queue_nobody_declared(backend: CeleryBackgroundBackend) -> None:
    assert backend.queue_length_sync(_queue()) == 0
    tasks.add.apply_async(args=(1, 1), queue="default")  # the connection is still usable
    assert backend.queue_length_sync("default") >= 1


async def test_countdown_waits_in_a_delay_queue_not_in_a_worker(
    backend: CeleryBackgroundBackend,
) -> None:
    """No worker consumes ``queue``: the delayed message is not in it until due, then it
    is, with no ETA header (a worker never holds it unacknowledged while it waits)."""
    queue = _queue()
    countdown = 2.0
    sent = time.monotonic()
    await tasks.add.apply_async(args=(1, 2), queue=queue, countdown=countdown)
    waiting = delay_queue_name(queue, delay_ms(countdown))
    assert await backend.queue_length(queue) == 0
    assert await backend.queue_length(waiting) == 1
    wait_for(lambda: backend.queue_length_sync(queue) == 1, 60, what="the due message")
    assert time.monotonic() - sent >= countdown  # never early
    assert backend.queue_length_sync(waiting) == 0
    with backend.celery_app.connection_for_read() as conn:
        message = conn.default_channel.basic_get(queue, no_ack=True)
    assert message.headers["eta"] is None
    assert message.headers["x-death"][0]["queue"] == waiting  # dead-lettered when due


def test_retry_delay_goes_through_a_delay_queue(
    rabbit: RabbitVhost, own_redis: RedisServer
) -> None:
    celery_app = Celery("retries", broker=rabbit.url())
    backend = CeleryBackgroundBackend(celery_app, redis_url=own_redis.url)
    configure_background_tasks(backend, signing_key=SIGNING_KEY)
    with CeleryWorker(own_redis.url, concurrency=1, broker_url=rabbit.url()) as worker:
        worker.wait_ready()
        handle = tasks.flaky.delay(2)  # fails twice, retried after 0.01 s and 0.02 s
        assert handle.result_sync(timeout=60)["attempt"] == 3
        assert worker.log().count(f"[{handle.id}] received") == 3
    backend.shutdown_sync()


def _publish_with_headers(backend: CeleryBackgroundBackend, env: TaskEnvelope, **extra: object):
    message = Message(env, _codec.encode(env, signing_key=SIGNING_KEY))
    headers = celery_headers(message, None, task_name=env.task_name, limits=(None, None))
    headers.update(extra)
    with backend.celery_app.producer_or_acquire() as producer:
        producer.publish(
            celery_body(message),
            exchange="",
            routing_key=env.queue,
            headers=headers,
            content_type="application/json",
            content_encoding="utf-8",
            declare=[backend.celery_app.amqp.queues[env.queue]],
        )


def test_poison_guard_reads_the_quorum_delivery_count(
    rabbit: RabbitVhost, own_redis: RedisServer
) -> None:
    """A message whose ``x-delivery-count`` (a quorum queue's count of its returns) is past
    max_deliveries is a dead letter, without a count in the state; one below runs."""
    celery_app = Celery("poison", broker=rabbit.url())
    backend = CeleryBackgroundBackend(celery_app, redis_url=own_redis.url)
    configure_background_tasks(backend, signing_key=SIGNING_KEY)
    client = redis.Redis.from_url(own_redis.url)
    key = uuid.uuid4().hex
    with CeleryWorker(own_redis.url, concurrency=1, broker_url=rabbit.url()) as worker:
        worker.wait_ready()
        poison = TaskEnvelope(uuid.uuid4().hex, tasks.count.name, (key,), {})
        _publish_with_headers(backend, poison, **{"x-delivery-count": backend.max_deliveries})
        found = wait_for(
            lambda: [d for d in backend.dead_letters_sync() if d.task_id == poison.task_id],
            60,
            what="the poison letter",
        )
        assert found[0].reason == "poison"
        ok = TaskEnvelope(uuid.uuid4().hex, tasks.count.name, (key,), {})
        _publish_with_headers(backend, ok, **{"x-delivery-count": backend.max_deliveries - 1})
        assert backend.wait_result_sync(ok.task_id, timeout=60).value == 1
        assert client.get(f"pacificpy-test:{key}") == b"1"  # the poison one never ran
    backend.shutdown_sync()


def test_publish_survives_connections_the_broker_closed(
    backend: CeleryBackgroundBackend, rabbit: RabbitVhost
) -> None:
    """The app's pooled connections are closed by RabbitMQ (a restart, a heartbeat timeout,
    an operator): the next enqueue, plain or delayed, reopens one at once and succeeds."""
    queue = _queue()
    tasks.add.apply_async(args=(1, 1), queue=queue)
    tasks.add.apply_async(args=(1, 1), queue=queue, countdown=60)
    rabbit.close_connections()
    tasks.add.apply_async(args=(2, 2), queue=queue)
    rabbit.close_connections()
    tasks.add.apply_async(args=(3, 3), queue=queue, countdown=120)
    # At least once: a publish whose confirm the closing connection lost is sent again.
    assert backend.queue_length_sync(queue) >= 2
    assert backend.queue_length_sync(delay_queue_name(queue, delay_ms(120))) >= 1
