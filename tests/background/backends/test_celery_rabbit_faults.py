"""Faults on Celery + RabbitMQ with real workers: the worker SIGKILLed mid-task, and its
broker connection cut and restored (through a TCP proxy of the test's own: the machine's
RabbitMQ itself cannot be stopped); each with the state in Redis and in PostgreSQL. Every
task of a batch counts its runs in Redis, so each is known to have run 0 times (lost),
once, or more (duplicated). The issue's
misconfiguration, refused at startup, is in ``test_celery_rabbit_setup``."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery

from pacificpy.background.backend import CeleryBackgroundBackend
from pacificpy.background.backends.postgres import PostgresTaskState
from pacificpy.background.decorators import configure_background_tasks
from pacificpy.background.task import TaskHandle
from tests.conformance import tasks
from tests.conformance.harness import SIGNING_KEY
from tests.conformance.harness_celery import CeleryWorker
from tests.support.postgres import PostgresDatabase, require_postgres
from tests.support.rabbitmq import RabbitVhost
from tests.support.redis_server import RedisServer
from tests.support.tcp_proxy import TcpProxy
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(240)

WAIT = 120.0


@pytest.fixture(params=["redis", "postgres"])
def state_url(request: pytest.FixtureRequest, own_redis: RedisServer) -> Iterator[str | None]:
    """Where the state lives: None (the test's Redis, ``redis_url=``) or a PostgreSQL
    database of the test's own."""
    if request.param == "redis":
        yield None
        return
    require_postgres()
    with PostgresDatabase() as database:
        yield database.url


@pytest.fixture
def backend(
    rabbit: RabbitVhost, own_redis: RedisServer, state_url: str | None
) -> Iterator[CeleryBackgroundBackend]:
    celery_app = Celery("faults", broker=rabbit.url())
    if state_url is None:
        backend = CeleryBackgroundBackend(celery_app, redis_url=own_redis.url)
    else:
        backend = CeleryBackgroundBackend(celery_app, state=PostgresTaskState(state_url))
    configure_background_tasks(backend, signing_key=SIGNING_KEY)
    yield backend
    backend.shutdown_sync()


def _batch(n: int) -> tuple[list[str], list[TaskHandle[Any]]]:
    keys = [uuid.uuid4().hex for _ in range(n)]
    return keys, [tasks.count.delay(k) for k in keys]


def _tally(url: str, keys: list[str], **also: Any) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    runs = [int(client.get(f"pacificpy-test:{k}") or 0) for k in keys]
    tally = {
        "sent": len(keys),
        "completed": sum(1 for r in runs if r),
        "duplicated": sum(r - 1 for r in runs if r > 1),
        "lost": sum(1 for r in runs if r == 0),
        **also,
    }
    print("rabbit fault:", json.dumps(tally))  # the figures of docs/reliability.md
    return tally


def test_sigkill_mid_task_runs_again_lost_zero(
    backend: CeleryBackgroundBackend,
    rabbit: RabbitVhost,
    own_redis: RedisServer,
    state_url: str | None,
) -> None:
    """The whole worker (main and pool processes) is SIGKILLed while both its slots hold a
    task: RabbitMQ gives every unacknowledged message back when the connection drops, and
    a new worker runs them (no visibility timeout to wait out)."""
    options: dict[str, Any] = {"broker_url": rabbit.url(), "state_url": state_url}
    first = CeleryWorker(own_redis.url, concurrency=2, **options).start()
    try:
        first.wait_ready()
        done_keys, done = _batch(20)
        for h in done:
            h.result_sync(timeout=WAIT)
        long = [tasks.sleep_for.delay(3.0) for _ in range(2)]
        keys, handles = _batch(40)
        for h in long:
            first.wait_for_log(f"[{h.id}] received", timeout=WAIT)
        first.signal(signal.SIGKILL, group=True)
        first.wait(10)
        with CeleryWorker(own_redis.url, concurrency=2, **options) as second:
            second.wait_ready()
            for h in long:
                assert h.result_sync(timeout=WAIT) == 3.0
                assert f"[{h.id}] received" in second.log()  # it ran again, on the new one
            for h in handles:
                h.result_sync(timeout=WAIT)
    finally:
        first.close()
    tally = _tally(
        own_redis.url,
        done_keys + keys,
        killed_mid_task=len(long),
        state="postgres" if state_url else "redis",
    )
    assert tally["lost"] == 0 and tally["completed"] == 60


def test_broker_connection_cut_and_restored(
    backend: CeleryBackgroundBackend,
    rabbit: RabbitVhost,
    own_redis: RedisServer,
    state_url: str | None,
) -> None:
    """The worker reaches RabbitMQ through a proxy; the proxy closes every connection and
    refuses new ones while tasks run and more are sent, then listens again. The worker
    reconnects by itself and every task runs; the one running during the cut could not be
    acknowledged and runs again (a duplicate, never a loss)."""
    with TcpProxy(*_rabbit_address(rabbit)) as proxy:
        url = rabbit.url(port=proxy.port)
        with CeleryWorker(
            own_redis.url, concurrency=2, broker_url=url, state_url=state_url
        ) as worker:
            worker.wait_ready()
            before_keys, before = _batch(20)
            for h in before:
                h.result_sync(timeout=WAIT)
            running = tasks.sleep_for.delay(2.0)
            worker.wait_for_log(f"[{running.id}] received", timeout=WAIT)
            connections = proxy.accepted
            proxy.cut()
            gap_keys, gap = _batch(20)  # the app's own connection is not cut: accepted
            worker.wait_for_log("Connection to broker lost", timeout=WAIT)
            proxy.restore()
            after_keys, after = _batch(20)
            for h in (running, *gap, *after):
                h.result_sync(timeout=WAIT)
            assert worker.proc is not None and worker.proc.poll() is None  # it survived
            wait_for(lambda: proxy.accepted > connections, WAIT, what="a reconnection")
    tally = _tally(
        own_redis.url,
        before_keys + gap_keys + after_keys,
        state="postgres" if state_url else "redis",
    )
    assert tally["lost"] == 0 and tally["completed"] == 60


def _rabbit_address(rabbit: RabbitVhost) -> tuple[str, int]:
    return rabbit.host, rabbit.port
