"""``app.include_task_events()``: one task's status and progress over Server-Sent Events,
served by a real uvicorn; who may open a stream; disconnects and stalled clients."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from pacificpy import PacificPy
from pacificpy.background.decorators import background
from pacificpy.background.local import LocalExecutor
from pacificpy.errors import ConfigurationError
from pacificpy.web.events import TaskEvents
from tests.apps.events_app import PATH, SECRET, TOKEN
from tests.support.uvicorn_server import serve_app
from tests.support.wait import wait_for

AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: The signer of the served app (same path and secret), to forge and alter URLs with.
SIGNER = TaskEvents(PATH, TOKEN, SECRET)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve_app("tests.apps.events_app:app") as (base_url, _proc):
        yield base_url


@pytest.fixture
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as client:
        yield client


def start(http: httpx.Client, steps: int = 5, step_seconds: float = 0.1) -> dict[str, str]:
    resp = http.post("/start", json={"steps": steps, "step_seconds": step_seconds})
    assert resp.status_code == 200, resp.text
    started: dict[str, str] = resp.json()
    return started


def read_events(resp: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """Every ``(event, data)`` of a stream, until the server closes it."""
    events: list[tuple[str, dict[str, Any]]] = []
    name = "message"
    for line in resp.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((name, orjson.loads(line[6:])))
            name = "message"
    return events


def test_stream_with_the_token_shows_progress_until_completed(http: httpx.Client) -> None:
    task_id = start(http, steps=6, step_seconds=0.15)["task_id"]
    with http.stream("GET", f"{PATH}/{task_id}", headers=AUTH) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = read_events(resp)
    names = [name for name, _ in events]
    assert names[-1] == "end" and set(names[:-1]) <= {"task"}
    last = events[-1][1]
    assert last == {"id": task_id, "status": "completed", "done": 6.0, "total": 6.0,
                    "message": "step 6"}  # fmt: skip
    dones = [data["done"] for _, data in events if data["done"] is not None]
    assert dones == sorted(dones) and len(dones) >= 2  # the bar moved, then filled


def test_stream_with_the_signed_url_of_the_task(http: httpx.Client) -> None:
    started = start(http, steps=3, step_seconds=0.05)
    with http.stream("GET", started["events"]) as resp:
        assert resp.status_code == 200
        events = read_events(resp)
    assert events[-1][0] == "end"
    assert events[-1][1]["status"] == "completed"


def test_a_cancelled_task_ends_its_stream_cancelled(http: httpx.Client) -> None:
    started = start(http, steps=200, step_seconds=0.1)
    with http.stream("GET", started["events"]) as resp:
        lines = resp.iter_lines()
        for line in lines:
            if line.startswith("data: ") and orjson.loads(line[6:])["done"]:
                break  # it runs and reports
        assert http.post(f"/cancel/{started['task_id']}").json() == {"cancelled": True}
        rest = "\n".join(lines)
    assert "event: end" in rest
    assert '"status":"cancelled"' in rest


# -- who may open a stream -----------------------------------------------------------------
def status_of(http: httpx.Client, url: str, headers: dict[str, str] | None = None) -> int:
    with http.stream("GET", url, headers=headers) as resp:
        return resp.status_code


def test_no_token_and_no_signature_is_401(http: httpx.Client) -> None:
    task_id = start(http)["task_id"]
    assert status_of(http, f"{PATH}/{task_id}") == 401


def test_a_wrong_token_is_refused(http: httpx.Client) -> None:
    task_id = start(http)["task_id"]
    assert status_of(http, f"{PATH}/{task_id}", {"Authorization": "Bearer nope"}) == 403
    assert status_of(http, f"{PATH}/{task_id}", {"Authorization": f"Basic {TOKEN}"}) == 403


def test_an_altered_signed_url_is_refused(http: httpx.Client) -> None:
    url = start(http)["events"]
    path, _, query = url.partition("?")
    params = dict(p.split("=") for p in query.split("&"))
    sig = params["signature"]
    flipped = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    assert status_of(http, f"{path}?expires={params['expires']}&signature={flipped}") == 403
    later = int(params["expires"]) + 3600  # a longer life, with the old signature
    assert status_of(http, f"{path}?expires={later}&signature={sig}") == 403
    assert status_of(http, f"{path}?expires={params['expires']}") == 403
    assert status_of(http, f"{path}?expires=soon&signature={sig}") == 403
    assert status_of(http, url) == 200  # the URL as given still opens


def test_an_expired_signed_url_is_refused(http: httpx.Client) -> None:
    task_id = start(http)["task_id"]
    past = int(time.time()) - 5
    signed = f"{PATH}/{task_id}?expires={past}&signature={SIGNER.signature(task_id, past)}"
    assert status_of(http, signed) == 403


def test_a_signed_url_opens_no_other_task(http: httpx.Client) -> None:
    mine = start(http)
    other = start(http)["task_id"]
    query = urlsplit(mine["events"]).query
    assert status_of(http, f"{PATH}/{other}?{query}") == 403


# -- resources ---------------------------------------------------------------------------
def open_streams(http: httpx.Client) -> int:
    count: int = http.get("/streams").json()["open"]
    return count


def test_a_disconnect_ends_the_stream(http: httpx.Client) -> None:
    wait_for(lambda: open_streams(http) == 0, timeout=30, what="earlier streams to end")
    started = start(http, steps=300, step_seconds=0.1)
    with http.stream("GET", started["events"]) as resp:
        lines = resp.iter_lines()  # kept: a generator dropped would close the response
        for line in lines:
            if line.startswith("data: "):
                break
        assert open_streams(http) == 1
    # The client went away: the server's stream ends (within a poll or two), its reads stop.
    wait_for(lambda: open_streams(http) == 0, timeout=15, what="the stream to end")
    http.post(f"/cancel/{started['task_id']}")


def test_a_stalled_client_holds_up_nobody(server: str, http: httpx.Client) -> None:
    started = start(http, steps=20, step_seconds=0.05)
    where = urlsplit(server)
    stalled = socket.create_connection((where.hostname, where.port))
    try:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        request = f"GET {started['events']} HTTP/1.1\r\nHost: {where.netloc}\r\n\r\n"
        stalled.sendall(request.encode())  # and never reads a byte
        with http.stream("GET", started["events"]) as resp:
            events = read_events(resp)  # another client still gets every event, to the end
        assert events[-1][1]["status"] == "completed"
        status = http.get(f"/status/{started['task_id']}").json()["status"]
        assert status == "completed"
    finally:
        stalled.close()


# -- configuration -------------------------------------------------------------------------
@background
def nothing() -> None:
    return None


def test_events_url_needs_include_task_events(executor: LocalExecutor) -> None:
    handle = nothing.delay()
    with pytest.raises(RuntimeError, match="include_task_events"):
        handle.events_url(PacificPy())


def test_events_url_is_signed_for_the_task(executor: LocalExecutor) -> None:
    app = PacificPy()
    app.include_task_events(path="/ev", secret=SECRET)
    handle = nothing.delay()
    url = handle.events_url(app, expires_in=60)
    path, _, query = url.partition("?")
    assert path == f"/ev/{handle.id}"
    params = dict(p.split("=") for p in query.split("&"))
    assert int(params["expires"]) - time.time() == pytest.approx(60, abs=2)
    assert params["signature"] == TaskEvents("/ev", None, SECRET).signature(
        handle.id, int(params["expires"])
    )
    with pytest.raises(ValueError, match="expires_in"):
        handle.events_url(app, expires_in=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"token": " "}, "blank"), ({"secret": "short"}, "16 bytes")],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        PacificPy().include_task_events(**kwargs)
