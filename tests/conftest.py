"""Shared fixtures: process-wide resets after every test, the suite's own redis-server."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pacificpy.background.config import reset_all
from tests.support.postgres import PostgresDatabase, require_postgres
from tests.support.redis_server import RedisServer, RedisServerError, redis_server_binary


@pytest.fixture(autouse=True)
def _reset_globals() -> Iterator[None]:
    """Every test starts as a fresh process would: no configured backend, a fresh monitor,
    no hooks (tracing off), no cached state (``config.reset_all``)."""
    yield
    reset_all()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of the suite's own on a free port (never the machine's 6379).

    Missing redis-server: the test fails when ``CI`` is set, and is skipped otherwise.
    """
    if redis_server_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed; `make test` installs it")
        pytest.skip("redis-server is not installed")
    server = RedisServer()
    try:
        server.start()
    except RedisServerError as exc:
        pytest.fail(str(exc))
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the suite's redis-server, started again if a fault test left it stopped."""
    if not redis_server.is_running():
        redis_server.start()
    return redis_server.url


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[PostgresDatabase]:
    """A PostgreSQL database of this run's own (dropped at the end); skipped (failed under
    ``CI``) when PostgreSQL does not answer."""
    require_postgres()
    with PostgresDatabase() as database:
        yield database


@pytest.fixture
def postgres_url(postgres_database: PostgresDatabase) -> str:
    """URL of a fresh schema of the run's PostgreSQL database: this test's tables alone."""
    return postgres_database.schema_url()
