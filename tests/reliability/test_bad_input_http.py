"""Bad HTTP input through a real uvicorn: each gets a clear 4xx, and the server keeps serving.

The app is ``tests/reliability/apps/load_app.py`` on the local executor; after every bad
request a good one must still enqueue a task that runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.reliability import _support
from tests.support.redis_server import RedisServer
from tests.support.uvicorn_server import serve_app

pytestmark = pytest.mark.redis

APP = "tests.reliability.apps.load_app:app"
MIB = 1_048_576


@pytest.fixture(scope="module")
def server(rel_redis: RedisServer) -> Iterator[str]:
    env = {"PACIFICPY_REL_BACKEND": "local", "PACIFICPY_TEST_REDIS": rel_redis.url}
    with serve_app(APP, env=env) as (url, _proc):
        yield url


@pytest.fixture(scope="module")
def h11_server(rel_redis: RedisServer) -> Iterator[str]:
    env = {"PACIFICPY_REL_BACKEND": "local", "PACIFICPY_TEST_REDIS": rel_redis.url}
    with serve_app(APP, env=env, extra_args=["--http", "h11"]) as (url, _proc):
        yield url


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30.0) as http:
        yield http


def assert_json_error(response: httpx.Response, status: int, text: str) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert text in body["error"]
    assert "Traceback" not in response.text
    return body


def assert_still_serving(base_url: str, counter: redis.Redis) -> None:
    """A fresh connection still enqueues a task, and the task runs."""
    key = f"rel-http-{uuid.uuid4().hex}"
    response = httpx.post(f"{base_url}/enqueue", json={"key": key}, timeout=30.0)
    assert response.status_code == 200, response.text
    tally = _support.wait_counts(counter, [key], timeout=30.0)
    assert tally.completed == 1 and tally.duplicated == 0


def test_malformed_json(client: httpx.Client, server: str, counter: redis.Redis) -> None:
    response = client.post(
        "/enqueue", content=b'{"key": "abc"', headers={"content-type": "application/json"}
    )
    assert_json_error(response, 400, "Malformed JSON body")
    assert_still_serving(server, counter)


def test_wrong_content_type(client: httpx.Client, server: str, counter: redis.Redis) -> None:
    # A form body sent to a JSON endpoint: PacificPy, like Starlette, does not police the
    # Content-Type header; the body is parsed as JSON and fails as JSON.
    response = client.post("/enqueue", data={"key": "abc"})
    assert response.request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert_json_error(response, 400, "Malformed JSON body")
    response = client.post(
        "/enqueue", content=b"\x89PNG\r\n\x1a\n", headers={"content-type": "image/png"}
    )
    assert_json_error(response, 400, "Malformed JSON body")
    assert_still_serving(server, counter)


def test_valid_json_of_the_wrong_shape(
    client: httpx.Client, server: str, counter: redis.Redis
) -> None:
    for body in (b"[]", b'"key"', b"null", b'{"key": 5}', b'{"key": {"$gt": ""}}'):
        response = client.post("/enqueue", content=body)
        assert_json_error(response, 422, "expected a JSON object")
    assert_still_serving(server, counter)


def test_oversized_body(client: httpx.Client, server: str, counter: redis.Redis) -> None:
    big = b'{"key": "' + b"x" * (2 * MIB) + b'"}'
    assert_json_error(client.post("/enqueue", content=big), 413, "max_body_size")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        for _ in range(40):
            yield b" " * 65536

    assert_json_error(client.post("/enqueue", content=chunks()), 413, "max_body_size")
    assert_still_serving(server, counter)


@pytest.mark.parametrize("depth", [1_100, 100_000])
def test_deep_nesting(client: httpx.Client, server: str, counter: redis.Redis, depth: int) -> None:
    body = b"[" * depth + b"]" * depth
    response = client.post("/enqueue", content=body)
    assert_json_error(response, 400, "Malformed JSON body")
    nested_obj = b'{"a":' * depth + b"1" + b"}" * depth
    assert_json_error(client.post("/enqueue", content=nested_obj), 400, "Malformed JSON body")
    assert_still_serving(server, counter)


def test_invalid_utf8(client: httpx.Client, server: str, counter: redis.Redis) -> None:
    for body in (b'{"key": "\xff\xfe"}', b'{"key": "\xed\xa0\x80"}', b"\xc3\x28"):
        assert_json_error(client.post("/enqueue", content=body), 400, "Malformed JSON body")
    assert_still_serving(server, counter)


def _send_huge_headers(base_url: str, headers: dict[str, str]) -> httpx.Response | None:
    """The response, or None when the server closed the connection instead."""
    try:
        return httpx.get(f"{base_url}/ok", headers=headers, timeout=30.0)
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
        return None


HUGE_HEADERS = {
    "one 1 MiB header": {"x-big": "a" * MIB},
    "2,000 headers of 512 bytes": {f"x-h{i}": "v" * 512 for i in range(2_000)},
}


@pytest.mark.parametrize("headers", HUGE_HEADERS.values(), ids=HUGE_HEADERS.keys())
def test_huge_headers_h11(h11_server: str, counter: redis.Redis, headers: dict[str, str]) -> None:
    """uvicorn's h11 protocol refuses them (400, or a closed connection)."""
    response = _send_huge_headers(h11_server, headers)
    assert response is None or 400 <= response.status_code < 500
    assert_still_serving(h11_server, counter)


@pytest.mark.parametrize("headers", HUGE_HEADERS.values(), ids=HUGE_HEADERS.keys())
def test_huge_headers_keep_the_default_server_serving(
    server: str, counter: redis.Redis, headers: dict[str, str]
) -> None:
    _send_huge_headers(server, headers)
    assert_still_serving(server, counter)


@pytest.mark.parametrize("headers", HUGE_HEADERS.values(), ids=HUGE_HEADERS.keys())
def test_huge_headers_refused_by_default_server(server: str, headers: dict[str, str]) -> None:
    response = _send_huge_headers(server, headers)
    assert response is None or response.status_code in (400, 431)
