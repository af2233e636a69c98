"""Idempotency keys in Redis, on the suite's real redis-server: one Redis key per (task,
key) pair, written by the ARQ enqueue script and the Celery producer through the same
helper, and kept for the default TTL of 24 hours."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from arq.connections import RedisSettings
from celery import Celery

from pacificpy.background.backend import (
    ARQBackgroundBackend,
    BackgroundBackend,
    CeleryBackgroundBackend,
)
from pacificpy.background.backends.redis.state import RedisState
from pacificpy.background.decorators import background, configure_background_tasks
from tests.conformance.harness import SIGNING_KEY
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)

DB = 13
DAY = 86_400


@background(name="a")
def task_a() -> None:
    """A task whose name, with ``:`` and a key, reads like task ``a:b``'s."""


@background(name="a:b")
def task_a_b() -> None:
    """See :func:`task_a`."""


@pytest.fixture
def db_url(redis_server: RedisServer) -> str:
    url = redis_server.fresh_db_url(DB)
    return url


def _arq(url: str) -> ARQBackgroundBackend:
    return ARQBackgroundBackend(redis_settings=RedisSettings.from_dsn(url), shutdown_timeout=1.0)


def _celery(url: str) -> CeleryBackgroundBackend:
    return CeleryBackgroundBackend(celery_app=Celery("idem-test", broker=url), redis_url=url)


@pytest.fixture(params=["arq", "celery"])
def backend(request: pytest.FixtureRequest, db_url: str) -> Iterator[BackgroundBackend]:
    made = _arq(db_url) if request.param == "arq" else _celery(db_url)
    configure_background_tasks(made, signing_key=SIGNING_KEY)
    yield made
    made.shutdown_sync()  # type: ignore[attr-defined]


def _state(backend: BackgroundBackend) -> RedisState:
    state = backend.state  # type: ignore[attr-defined]
    assert isinstance(state, RedisState)
    return state


def test_state_keys_of_colon_joined_pairs_differ(db_url: str) -> None:
    state = RedisState(db_url, prefix=f"pp-{uuid.uuid4().hex[:8]}")
    try:
        assert state.idem_key("a", "b:c") != state.idem_key("a:b", "c")
        assert state.claim("a", "b:c", "first", DAY)
        assert state.claim("a:b", "c", "second", DAY)
        assert not state.claim("a", "b:c", "third", DAY)
        state.release("a", "b:c")
        assert state.sync.exists(state.idem_key("a:b", "c"))
        assert state.claim("a", "b:c", "fourth", DAY)
    finally:
        state.close()


def test_colliding_pairs_both_enqueue(backend: BackgroundBackend) -> None:
    state = _state(backend)
    first = task_a.apply_async(idempotency_key="b:c")
    second = task_a_b.apply_async(idempotency_key="c")
    assert first.id != second.id
    client = state.sync
    assert client.get(state.idem_key("a", "b:c")) == first.id.encode()
    assert client.get(state.idem_key("a:b", "c")) == second.id.encode()
    # and a true duplicate still enqueues nothing new: the key keeps its first task
    again = task_a.apply_async(idempotency_key="b:c")
    assert again.id == first.id
    assert client.get(state.idem_key("a", "b:c")) == first.id.encode()


def test_default_idempotency_ttl_is_a_day_in_redis(backend: BackgroundBackend) -> None:
    assert backend.idempotency_ttl == DAY
    state = _state(backend)
    key = uuid.uuid4().hex
    task_a.apply_async(idempotency_key=key)
    ttl = state.sync.ttl(state.idem_key("a", key))
    assert DAY - 600 <= ttl <= DAY
