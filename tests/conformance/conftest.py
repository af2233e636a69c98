"""The ``harness`` fixture: every conformance test runs once per backend."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from typing import Any

import pytest

from pacificpy.background.decorators import configure_background_tasks
from tests.conformance.harness import SIGNING_KEY, Harness

BACKENDS = ["local", "celery", "arq", "sqlite", "sqlite_proc", "celery_rabbit", "celery_rabbit_pg"]


@pytest.fixture(scope="session")
def _harnesses(redis_server: Any) -> Iterator[dict[str, Any]]:
    os.environ["PACIFICPY_TEST_REDIS"] = redis_server.url
    started: dict[str, Any] = {}
    yield started
    for gen, _ in started.values():
        gen.close()


@pytest.fixture(params=BACKENDS)
def harness(
    request: pytest.FixtureRequest, _harnesses: dict[str, Any], redis_url: str
) -> Iterator[Harness]:
    name: str = request.param
    if name not in _harnesses:
        try:
            module = importlib.import_module(f"tests.conformance.harness_{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"tests.conformance.harness_{name}":
                raise
            pytest.skip(f"the {name} backend has no conformance harness yet")
        gen = module.make_harness(request.getfixturevalue("redis_server"))
        _harnesses[name] = (gen, next(gen))
    gen, h = _harnesses[name]
    skip = h.skips.get(request.node.originalname.removeprefix("test_"))
    if skip:
        pytest.skip(f"{name}: {skip}")
    backend = h.make_backend()
    configure_background_tasks(backend, signing_key=SIGNING_KEY)
    h.backend = backend
    yield h
    shutdown_sync = getattr(backend, "shutdown_sync", None)
    if shutdown_sync is not None:
        shutdown_sync(timeout=5)
