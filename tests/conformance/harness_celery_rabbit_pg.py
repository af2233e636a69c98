"""Celery on RabbitMQ with PacificPy's state in PostgreSQL (``state=PostgresTaskState``), in
the conformance suite: a real worker on a RabbitMQ vhost of this run's own, the state in a
PostgreSQL database of this run's own (both deleted at teardown). No Redis holds state."""

from __future__ import annotations

from collections.abc import Iterator

from tests.conformance.harness import Harness
from tests.conformance.harness_celery_rabbit import rabbit_harness
from tests.support.postgres import PostgresDatabase, require_postgres
from tests.support.redis_server import RedisServer

_NO_TOMBSTONES = "PostgresTaskState keeps no tombstones yet (cancellation needs them)"
#: The behaviours whose state the PostgreSQL TaskState does not keep yet.
PG_SKIPS = {
    **dict.fromkeys(
        (
            "a_delayed_task_never_starts",
            "a_queued_task_cancelled_before_its_delivery_never_starts",
            "a_task_waiting_to_retry_never_runs_again",
            "a_running_async_task_gets_cancelled_error",
            "a_running_sync_task_sees_cancelled",
            "cancel_sync_of_a_running_task",
            "cancelling_a_finished_task_changes_nothing",
            "cancelling_a_cancelled_task_returns_false",
            "cancelling_a_failed_task_changes_nothing",
            "terminate_kills_the_process_running_it",
        ),
        _NO_TOMBSTONES,
    ),
    "a_live_worker_of_the_backend_is_registered": (
        "PostgresTaskState keeps no worker registry yet"
    ),
}


def make_harness(redis_server: RedisServer) -> Iterator[Harness]:
    require_postgres()
    with PostgresDatabase() as database:
        yield from rabbit_harness(
            "celery_rabbit_pg", redis_server, state_url=database.url, skips=PG_SKIPS
        )
