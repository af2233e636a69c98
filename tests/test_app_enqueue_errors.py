"""A task that cannot be enqueued answers 503 with Retry-After (SPEC §10.7), never a 500."""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from pacificpy import PacificPy
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import get_local_executor
from tests.support.net import free_port

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", message="Using `httpx` with", category=StarletteDeprecationWarning
    )
    from starlette.testclient import TestClient

release = threading.Event()
started = threading.Event()


@background
def hold() -> None:
    started.set()
    release.wait(30)


@background
def noop() -> None:
    pass


@pytest.fixture
def held() -> Iterator[None]:
    release.clear()
    started.clear()
    yield
    release.set()


def test_queue_full_answers_503_with_retry_after(
    held: None, caplog: pytest.LogCaptureFixture
) -> None:
    configure_background_tasks(get_local_executor(max_workers=1, max_queue_size=1))
    app = PacificPy()

    @app.post("/hold")
    async def start_hold(request: object) -> dict[str, str]:
        return {"task_id": (await hold.delay()).id}

    @app.post("/noop")
    async def enqueue_noop(request: object) -> dict[str, str]:
        return {"task_id": (await noop.delay()).id}

    with TestClient(app) as client:
        assert client.post("/hold").status_code == 200
        assert started.wait(30), "the holding task never started"
        assert client.post("/noop").status_code == 200  # the one waiting place
        with caplog.at_level(logging.WARNING, logger="pacificpy.app"):
            response = client.post("/noop")
        release.set()

    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert body["status"] == 503
    assert "queue is full" in body["error"]
    logged = [r.getMessage() for r in caplog.records if r.name == "pacificpy.app"]
    assert any("noop" in line and "max_queue_size=1" in line for line in logged), logged


@pytest.mark.redis
def test_unreachable_backend_answers_503_without_leaking_the_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from arq.connections import RedisSettings

    from pacificpy.background.backend import ARQBackgroundBackend

    port = free_port()  # nothing listens there
    settings = RedisSettings(host="127.0.0.1", port=port, conn_retries=0, conn_timeout=2)
    configure_background_tasks(ARQBackgroundBackend(redis_settings=settings))
    app = PacificPy()

    @app.post("/noop")
    async def enqueue_noop(request: object) -> dict[str, str]:
        return {"task_id": (await noop.delay()).id}

    with TestClient(app) as client, caplog.at_level(logging.WARNING, logger="pacificpy.app"):
        response = client.post("/noop")

    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert "unavailable" in response.json()["error"]
    assert str(port) not in response.text
    logged = [r.getMessage() for r in caplog.records if r.name == "pacificpy.app"]
    assert any(str(port) in line for line in logged), logged
