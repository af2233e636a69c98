"""A Redis backend that cannot reach Redis says so when the app starts, not at the first
request; the app starts anyway and an enqueue answers 503."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import pytest
from arq.connections import RedisSettings
from celery import Celery
from starlette.exceptions import StarletteDeprecationWarning

from pacificpy import PacificPy
from pacificpy.background.backend import (
    ARQBackgroundBackend,
    BackgroundBackend,
    CeleryBackgroundBackend,
)
from pacificpy.background.decorators import background, configure_background_tasks
from tests.support.net import free_port

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", message="Using `httpx` with", category=StarletteDeprecationWarning
    )
    from starlette.testclient import TestClient

pytestmark = pytest.mark.timeout(60)

PASSWORD = "s3cret-pw"


@background(name="startup-warning.noop")
def noop() -> None:
    pass


def _celery(port: int) -> BackgroundBackend:
    broker = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    return CeleryBackgroundBackend(celery_app=Celery("down", broker=broker, set_as_current=False))


def _arq(port: int) -> BackgroundBackend:
    settings = RedisSettings(host="127.0.0.1", port=port, password=PASSWORD)
    return ARQBackgroundBackend(redis_settings=settings)


@pytest.mark.parametrize(("kind", "make"), [("Celery", _celery), ("ARQ", _arq)])
def test_unreachable_redis_is_a_warning_at_startup(
    kind: str, make: Callable[[int], BackgroundBackend], caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there
    backend = make(port)
    configure_background_tasks(backend)
    app = PacificPy()
    requests: list[str] = []

    @app.post("/enqueue")
    async def enqueue(request: object) -> dict[str, str]:
        requests.append("enqueue")
        return {"task_id": (await noop.delay()).id}

    caplog.set_level(logging.WARNING, logger="pacificpy.background")
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            # The app has started (lifespan done) and served no request yet.
            assert requests == []
            warned = [
                r
                for r in caplog.records
                if r.levelno == logging.WARNING and "unreachable at startup" in r.getMessage()
            ]
            assert len(warned) == 1, [r.getMessage() for r in caplog.records]
            message = warned[0].getMessage()
            assert message.startswith(f"{kind} backend:")
            assert f"127.0.0.1:{port}" in message
            assert PASSWORD not in message
            # It still serves; the enqueue fails as an HTTP 503.
            response = client.post("/enqueue")
            assert response.status_code == 503
            assert requests == ["enqueue"]
    finally:
        backend.shutdown_sync()  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["Celery", "ARQ"])
def test_reachable_redis_starts_quietly(
    kind: str, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    if kind == "Celery":
        backend = CeleryBackgroundBackend(
            celery_app=Celery("up", broker=redis_url, set_as_current=False)
        )
    else:
        backend = ARQBackgroundBackend(redis_settings=RedisSettings.from_dsn(redis_url))
    configure_background_tasks(backend)
    caplog.set_level(logging.WARNING, logger="pacificpy.background")
    try:
        with TestClient(PacificPy()):
            pass
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    finally:
        backend.shutdown_sync()
