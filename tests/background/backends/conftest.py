"""Fixtures shared by the backend tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.rabbitmq import RabbitVhost, require_rabbitmq
from tests.support.redis_server import RedisServer


@pytest.fixture
def own_redis(monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    """A redis-server of this test alone (broker and state), free to stop and restart.

    Its URL is ``PACIFICPY_TEST_REDIS`` for the workers the test starts, so no other test's
    worker takes its tasks.
    """
    with RedisServer() as server:
        monkeypatch.setenv("PACIFICPY_TEST_REDIS", server.url)
        yield server


@pytest.fixture(scope="module")
def rabbit() -> Iterator[RabbitVhost]:
    """A RabbitMQ virtual host of this test module alone (deleted with its queues after)."""
    require_rabbitmq()
    with RabbitVhost() as vhost:
        yield vhost
