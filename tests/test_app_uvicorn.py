"""The web layer's error statuses through a real uvicorn process (uvloop + httptools)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.apps.web_app import MAX_BODY_SIZE
from tests.support.served_command import assert_served_app_ran, enqueue_and_read, run_served
from tests.support.uvicorn_server import serve_app

APP = "tests.apps.web_app:app"


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("web_app") / "events.txt"


@pytest.fixture(scope="module")
def base_url(events_file: Path) -> Iterator[str]:
    with serve_app(APP, env={"PACIFICPY_TEST_EVENTS": str(events_file)}) as (url, _proc):
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    # One keep-alive connection for the whole test: a bad request must not spoil it.
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        yield http


def assert_error(response: httpx.Response, status: int, message: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert message in body["error"]
    assert body["detail"] == body["error"]
    return body


def assert_still_serving(client: httpx.Client, base_url: str) -> None:
    assert client.get("/ok").json() == {"ok": True}
    # And on a fresh connection, in case the server closed the old one.
    assert httpx.get(f"{base_url}/ok", timeout=30.0).json() == {"ok": True}


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_startup_hook_ran_before_serving(client: httpx.Client, events_file: Path) -> None:
    assert client.get("/ok").json() == {"ok": True}
    assert events_file.read_text().splitlines() == ["startup"]


def test_routes_work(client: httpx.Client) -> None:
    assert client.get("/users/5").json() == {"user_id": 5}
    assert client.post("/echo", json={"a": [1, 2]}).json() == {"a": [1, 2]}
    assert client.post("/size", content=b"x" * MAX_BODY_SIZE).json() == {"size": MAX_BODY_SIZE}


def test_malformed_json_is_400(client: httpx.Client, base_url: str) -> None:
    response = client.post("/echo", content=b'{"a": ', headers={"content-type": "application/json"})
    assert_error(response, 400, "Malformed JSON body: ")
    assert_still_serving(client, base_url)


def test_invalid_utf8_is_400(client: httpx.Client, base_url: str) -> None:
    assert_error(client.post("/echo", content=b'"\xff\xfe"'), 400, "Malformed JSON body: ")
    assert_still_serving(client, base_url)


def test_unknown_path_is_404(client: httpx.Client, base_url: str) -> None:
    assert_error(client.get("/no/such/path"), 404, "Not Found")
    assert_error(client.get("/users/not-an-int"), 404, "Not Found")
    assert_still_serving(client, base_url)


def test_wrong_method_is_405(client: httpx.Client, base_url: str) -> None:
    response = client.put("/echo", json={})
    assert_error(response, 405, "Method Not Allowed")
    assert response.headers["allow"] == "POST"
    assert_still_serving(client, base_url)


def test_body_over_limit_by_content_length_is_413(client: httpx.Client, base_url: str) -> None:
    response = client.post("/echo", content=b"x" * (MAX_BODY_SIZE * 3))
    assert_error(response, 413, f"{MAX_BODY_SIZE} bytes")
    assert_still_serving(client, base_url)


def test_chunked_body_over_limit_is_413(client: httpx.Client, base_url: str) -> None:
    request = client.build_request(
        "POST", "/size", content=chunks(b"x" * (MAX_BODY_SIZE * 3), 16 * 1024)
    )
    assert "content-length" not in request.headers
    response = client.send(request)
    assert_error(response, 413, "max_body_size")
    assert_still_serving(client, base_url)


def test_http_exception_keeps_its_status(client: httpx.Client, base_url: str) -> None:
    assert_error(client.get("/teapot"), 418, "I'm a teapot")
    assert_still_serving(client, base_url)


def test_unhandled_exception_is_500_without_traceback(client: httpx.Client, base_url: str) -> None:
    response = client.get("/boom")
    body = assert_error(response, 500, "Internal Server Error")
    assert body == {
        "error": "Internal Server Error",
        "detail": "Internal Server Error",
        "status": 500,
    }
    assert "secret" not in response.text
    assert_still_serving(client, base_url)


def test_shutdown_hook_runs_on_sigint(tmp_path: Path) -> None:
    events = tmp_path / "events.txt"
    with serve_app(APP, env={"PACIFICPY_TEST_EVENTS": str(events)}) as (url, proc):
        assert httpx.get(f"{url}/ok", timeout=30.0).status_code == 200
    # serve_app has sent SIGINT and waited for the process to end: a graceful exit.
    assert proc.returncode == 0
    assert events.read_text().splitlines() == ["startup", "shutdown"]


# -- app.run(), for real ----------------------------------------------------------------------
@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_app_run_serves_runs_tasks_and_stops_on_a_signal(
    tmp_path: Path, stop_with: signal.Signals
) -> None:
    code = "import sys; from tests.apps.served_app import app; app.run(port=int(sys.argv[1]))"
    run = run_served(
        lambda port: [sys.executable, "-c", code, str(port)],
        enqueue_and_read,
        env={"PACIFICPY_TEST_DIR": str(tmp_path)},
        stop_with=stop_with,
    )
    assert_served_app_ran(run, stop_with, tmp_path)
