"""Celery on RabbitMQ with PacificPy's state in PostgreSQL (``state=PostgresTaskState``), in
the conformance suite: a real worker on a RabbitMQ vhost of this run's own, the state in a
PostgreSQL database of this run's own (both deleted at teardown). No Redis holds state."""

from __future__ import annotations

from collections.abc import Iterator

from tests.conformance.harness import Harness
from tests.conformance.harness_celery_rabbit import rabbit_harness
from tests.support.postgres import PostgresDatabase, require_postgres
from tests.support.redis_server import RedisServer

#: Flow control runs on the PostgreSQL state's leases and windows; priorities are the broker's.
PG_SKIPS = {
    "high_priority_task_starts_first_once_a_slot_frees": (
        "priorities need x-max-priority queues, which the RabbitMQ backend does not declare yet"
    ),
}


def make_harness(redis_server: RedisServer) -> Iterator[Harness]:
    require_postgres()
    with PostgresDatabase() as database:
        yield from rabbit_harness(
            "celery_rabbit_pg",
            redis_server,
            state_url=database.url,
            skips=PG_SKIPS,
            flow_app="tests.conformance.flow_celery_rabbit_pg_app",
        )
