"""Celery on RabbitMQ in the conformance suite: a real ``celery worker`` subprocess (prefork
pool) on a RabbitMQ virtual host of this run's own (deleted with its queues at teardown),
with PacificPy's state in the suite's redis-server (``redis_url=``).

:func:`rabbit_harness` also serves ``harness_celery_rabbit_pg`` (state in PostgreSQL).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from celery import Celery

from pacificpy.background.backend import CeleryBackgroundBackend
from tests.conformance._celery_setup import make_backend
from tests.conformance.harness import Harness
from tests.conformance.harness_celery import CeleryWorker, flow_workers, inject
from tests.support.rabbitmq import RabbitVhost, require_rabbitmq
from tests.support.redis_server import RedisServer

#: What no Celery-on-RabbitMQ harness runs, and why.
RABBIT_SKIPS = {
    "no_oldest_task_in_a_queue_nobody_used": (
        "oldest_waiting is Redis-only: RabbitMQ shows no message of a queue without "
        "taking it (CeleryBackgroundBackend.oldest_waiting_sync raises NotImplementedError)"
    ),
}


def rabbit_harness(
    name: str,
    redis_server: RedisServer,
    state_url: str | None = None,
    skips: dict[str, str] | None = None,
    flow_app: str | None = None,
) -> Iterator[Harness]:
    """A worker of ``tests.conformance.<name>_app`` on a vhost of its own; the state in
    ``state_url`` (PostgreSQL) or else the suite's Redis. The app module reads the broker
    from ``PACIFICPY_TEST_<NAME>_BROKER`` and the state from ``PACIFICPY_TEST_<NAME>_STATE``."""
    require_rabbitmq()
    with RabbitVhost() as vhost:
        broker = vhost.url()
        prefix = f"PACIFICPY_TEST_{name.upper()}"
        os.environ[f"{prefix}_BROKER"] = broker
        os.environ[f"{prefix}_STATE"] = state_url or ""
        celery_app = Celery("pacificpy-conformance", broker=broker)
        app = f"tests.conformance.{name}_app"

        def make() -> CeleryBackgroundBackend:
            return make_backend(celery_app, state_url or "")

        with CeleryWorker(redis_server.url, concurrency=4, app=app) as worker:
            worker.wait_ready()
            yield Harness(
                name=name,
                make_backend=make,
                inject_raw=inject,
                skips={**RABBIT_SKIPS, **(skips or {})},
                workers=None if flow_app is None else flow_workers(redis_server.url, flow_app),  # type: ignore[arg-type]
            )


def make_harness(redis_server: RedisServer) -> Iterator[Harness]:
    yield from rabbit_harness("celery_rabbit", redis_server)
