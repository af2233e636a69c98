"""Celery on RabbitMQ in the conformance suite: a real ``celery worker`` subprocess (prefork
pool) on a RabbitMQ virtual host of this run's own (deleted with its queues at teardown),
with PacificPy's state in the suite's redis-server (``redis_url=``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

from celery import Celery

from pacificpy.background.backend import CeleryBackgroundBackend
from tests.conformance.harness import Harness
from tests.conformance.harness_celery import CeleryWorker, inject
from tests.support.rabbitmq import RabbitVhost, require_rabbitmq
from tests.support.redis_server import RedisServer


def make_harness(redis_server: RedisServer) -> Iterator[Harness]:
    require_rabbitmq()
    with RabbitVhost() as vhost:
        broker = vhost.url()
        os.environ["PACIFICPY_TEST_RABBIT_BROKER"] = broker  # for celery_rabbit_app
        celery_app = Celery("pacificpy-conformance", broker=broker)
        app = "tests.conformance.celery_rabbit_app"
        with CeleryWorker(redis_server.url, concurrency=4, app=app, broker_url=broker) as worker:
            worker.wait_ready()
            yield Harness(
                name="celery_rabbit",
                make_backend=lambda: CeleryBackgroundBackend(
                    celery_app, redis_url=redis_server.url
                ),
                inject_raw=inject,
            )
