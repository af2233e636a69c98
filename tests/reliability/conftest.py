"""Fixtures of the reliability suite: one rig per backend, on a redis-server of its own.

The rigs reuse the conformance harnesses (``tests/conformance/harness_<name>.py``) to start
real workers, but against this suite's own redis-server, so killing or starving a worker
here never disturbs the conformance suite's workers. A harness that does not import fails
the tests that need it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from pacificpy.background.decorators import configure_background_tasks
from tests.conformance.harness import SIGNING_KEY, Harness
from tests.reliability import _support
from tests.support.redis_server import RedisServer, redis_server_binary

BACKENDS = ["local", "celery", "arq", "sqlite"]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    rows = _support.recorded()
    if not rows:
        return
    terminalreporter.section("reliability figures")
    terminalreporter.write_line(
        f"{'backend':8} {'scenario':34} {'sent':>6} {'completed':>9} {'dup':>5} {'lost':>5}"
    )
    for row in rows.values():
        terminalreporter.write_line(
            f"{row['backend']:8} {row['scenario']:34} {row['sent']:>6} {row['completed']:>9} "
            f"{row['duplicated']:>5} {row['lost']:>5}"
        )
    terminalreporter.write_line(f"written to {_support.RESULTS_PATH}")


def _need_redis_binary() -> None:
    if redis_server_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed; `make test` installs it")
        pytest.skip("redis-server is not installed")


@pytest.fixture(scope="session")
def rel_redis() -> Iterator[RedisServer]:
    """This suite's own redis-server: its rigs' broker and the tasks' counters."""
    _need_redis_binary()
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def rel_redis_url(rel_redis: RedisServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """URL of ``rel_redis`` (restarted if needed), also as ``PACIFICPY_TEST_REDIS`` here."""
    if not rel_redis.is_running():
        rel_redis.start()
    monkeypatch.setenv("PACIFICPY_TEST_REDIS", rel_redis.url)
    return rel_redis.url


@pytest.fixture
def counter(rel_redis_url: str) -> Iterator[redis.Redis]:
    """A client on the Redis the ``count`` tasks write to."""
    client = redis.Redis.from_url(rel_redis_url)
    yield client
    client.close()


def load_harness_module(name: str) -> Any:
    """``tests.conformance.harness_<name>``; a missing one is an error, never a skip."""
    return importlib.import_module(f"tests.conformance.harness_{name}")


def start_harness(name: str, server: RedisServer) -> tuple[Iterator[Harness], Harness]:
    """Start ``name``'s harness (and its workers) against ``server``.

    Workers inherit ``PACIFICPY_TEST_REDIS`` = ``server.url`` so their counters land there.
    """
    module = load_harness_module(name)
    previous = os.environ.get("PACIFICPY_TEST_REDIS")
    os.environ["PACIFICPY_TEST_REDIS"] = server.url
    try:
        gen = module.make_harness(server)
        return gen, next(gen)
    finally:
        if previous is None:
            os.environ.pop("PACIFICPY_TEST_REDIS", None)
        else:
            os.environ["PACIFICPY_TEST_REDIS"] = previous


@pytest.fixture(scope="session")
def _rel_harnesses(rel_redis: RedisServer) -> Iterator[dict[str, Any]]:
    started: dict[str, Any] = {}
    yield started
    for gen, _ in started.values():
        gen.close()


@pytest.fixture(params=BACKENDS)
def rig(
    request: pytest.FixtureRequest,
    _rel_harnesses: dict[str, Any],
    rel_redis: RedisServer,
    rel_redis_url: str,
) -> Iterator[Harness]:
    """A backend with its workers running, configured (signed) in this process."""
    name: str = request.param
    if name not in _rel_harnesses:
        _rel_harnesses[name] = start_harness(name, rel_redis)
    _, harness = _rel_harnesses[name]
    backend = harness.make_backend()
    configure_background_tasks(backend, signing_key=SIGNING_KEY)
    harness.backend = backend
    yield harness
    shutdown_sync = getattr(backend, "shutdown_sync", None)
    if shutdown_sync is not None:
        shutdown_sync(timeout=5)
