"""Celery on RabbitMQ with PacificPy's state in PostgreSQL (``state=PostgresTaskState``), in
the conformance suite: a real worker on a RabbitMQ vhost of this run's own, the state in a
PostgreSQL database of this run's own (both deleted at teardown). No Redis holds state."""

from __future__ import annotations

from collections.abc import Iterator

from tests.conformance.harness import Harness
from tests.conformance.harness_celery_rabbit import rabbit_harness
from tests.support.postgres import PostgresDatabase, require_postgres
from tests.support.redis_server import RedisServer


def make_harness(redis_server: RedisServer) -> Iterator[Harness]:
    require_postgres()
    with PostgresDatabase() as database:
        yield from rabbit_harness("celery_rabbit_pg", redis_server, state_url=database.url)
