"""The web layer through Starlette's TestClient: routes, requests, returns, errors, lifespan."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import subprocess
import sys
import threading
import types
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.exceptions import StarletteDeprecationWarning
from starlette.middleware import Middleware
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import pacificpy
import pacificpy.errors
from pacificpy import HTTPException, PacificPy
from pacificpy.routing import ORJSONResponse, Request

with warnings.catch_warnings():
    # Starlette 1.x warns when its TestClient runs on httpx instead of httpx2.
    warnings.filterwarnings(
        "ignore", message="Using `httpx` with", category=StarletteDeprecationWarning
    )
    from starlette.testclient import TestClient


@pytest.fixture
def app() -> PacificPy:
    return PacificPy()


@pytest.fixture
def client(app: PacificPy) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def assert_error(response: Any, status: int, message: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["error"] == body["detail"]
    if message is not None:
        assert message in body["error"]
    return body


# -- package ----------------------------------------------------------------------------------


def test_package_exports_app_errors_and_version() -> None:
    assert pacificpy.__version__ == "0.1.0"
    assert pacificpy.PacificPy is PacificPy
    assert pacificpy.HTTPException is StarletteHTTPException
    for name in pacificpy.errors.__all__:
        assert getattr(pacificpy, name) is getattr(pacificpy.errors, name)
        assert name in pacificpy.__all__


def test_importing_pacificpy_does_not_import_celery_or_arq() -> None:
    code = (
        "import sys, pacificpy, pacificpy.app, pacificpy.routing, pacificpy.cli\n"
        "bad = sorted(m for m in ('celery', 'arq', 'kombu') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- routes -----------------------------------------------------------------------------------


def test_method_decorators_route_their_method_only(app: PacificPy, client: TestClient) -> None:
    for method in ("get", "post", "put", "patch", "delete"):

        async def handler(request: Request, method: str = method) -> dict[str, str]:
            return {"method": request.method, "declared": method}

        returned = getattr(app, method)(f"/{method}")(handler)
        assert returned is handler  # decorators hand the function back unchanged

    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        response = client.request(method, f"/{method.lower()}")
        assert response.status_code == 200
        assert response.json() == {"method": method, "declared": method.lower()}
        other = "POST" if method != "POST" else "GET"
        assert client.request(other, f"/{method.lower()}").status_code == 405


def test_get_route_also_answers_head(app: PacificPy, client: TestClient) -> None:
    @app.get("/thing")
    async def thing(request: Request) -> dict[str, int]:
        return {"a": 1}

    response = client.head("/thing")
    assert response.status_code == 200
    assert response.content == b""


def test_route_with_several_methods_and_default_get(app: PacificPy, client: TestClient) -> None:
    @app.route("/items", methods=["GET", "POST"])
    async def items(request: Request) -> dict[str, str]:
        return {"method": request.method}

    @app.route("/default")
    async def default(request: Request) -> str:
        return "get only"

    assert client.get("/items").json() == {"method": "GET"}
    assert client.post("/items").json() == {"method": "POST"}
    assert client.put("/items").status_code == 405
    assert client.get("/default").text == "get only"
    assert client.post("/default").status_code == 405


def test_path_params_use_starlette_converters(app: PacificPy, client: TestClient) -> None:
    @app.get("/users/{user_id:int}")
    async def user(request: Request) -> dict[str, Any]:
        user_id = request.path_params["user_id"]
        return {"user_id": user_id, "type": type(user_id).__name__}

    @app.get("/files/{name:path}")
    async def files(request: Request) -> dict[str, Any]:
        return {"name": request.path_params["name"]}

    assert client.get("/users/42").json() == {"user_id": 42, "type": "int"}
    assert_error(client.get("/users/abc"), 404)
    assert client.get("/files/a/b/c.txt").json() == {"name": "a/b/c.txt"}


def test_query_params_and_headers(app: PacificPy, client: TestClient) -> None:
    @app.get("/search")
    async def search(request: Request) -> dict[str, Any]:
        return {
            "q": request.query_params["q"],
            "tags": request.query_params.getlist("tag"),
            "missing": request.query_params.get("missing"),
            "token": request.headers["x-token"],
        }

    response = client.get("/search?q=hello&tag=a&tag=b", headers={"X-Token": "t1"})
    assert response.json() == {"q": "hello", "tags": ["a", "b"], "missing": None, "token": "t1"}


def test_body_and_json(app: PacificPy, client: TestClient) -> None:
    @app.post("/raw")
    async def raw(request: Request) -> Response:
        body = await request.body()
        return Response(body[::-1], media_type="application/octet-stream")

    @app.post("/json")
    async def parsed(request: Request) -> dict[str, Any]:
        data = await request.json()
        again = await request.json()  # cached: the stream is read once
        return {"data": data, "same": data is again}

    assert client.post("/raw", content=b"abc").content == b"cba"
    payload = {"name": "Zoë", "n": [1, 2.5, None, True]}
    assert client.post("/json", json=payload).json() == {"data": payload, "same": True}


def test_handler_receives_pacificpy_request(app: PacificPy, client: TestClient) -> None:
    seen: list[Any] = []

    @app.get("/kind")
    async def kind(request: Any) -> None:
        seen.append(request)

    client.get("/kind")
    assert isinstance(seen[0], Request)
    assert seen[0].app is app


def test_sync_handler_runs_in_threadpool(app: PacificPy, client: TestClient) -> None:
    threads: dict[str, int] = {}

    @app.get("/async")
    async def async_handler(request: Request) -> dict[str, bool]:
        threads["async"] = threading.get_ident()
        return {"ok": True}

    @app.post("/sync")
    def sync_handler(request: Request) -> dict[str, Any]:
        threads["sync"] = threading.get_ident()
        return {"ok": True, "path": request.url.path}

    assert client.get("/async").json() == {"ok": True}
    assert client.post("/sync").json() == {"ok": True, "path": "/sync"}
    assert threads["sync"] != threads["async"]


def test_async_callable_object_handler(app: PacificPy, client: TestClient) -> None:
    class Handler:
        async def __call__(self, request: Request) -> dict[str, str]:
            return {"kind": "object"}

    app.add_route("/object", Handler(), methods=["GET"])
    assert client.get("/object").json() == {"kind": "object"}


def test_routes_added_after_startup_are_served(app: PacificPy, client: TestClient) -> None:
    @app.get("/first")
    async def first(request: Request) -> str:
        return "first"

    assert client.get("/first").text == "first"

    @app.get("/later")
    async def later(request: Request) -> str:
        return "later"

    app.add_route("/added", lambda request: {"added": True}, methods=["PUT"])
    assert client.get("/later").text == "later"
    assert client.put("/added").json() == {"added": True}


def test_mount_serves_an_asgi_app(app: PacificPy, client: TestClient) -> None:
    async def sub_app(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse(f"mounted {scope['path']}")(scope, receive, send)

    app.mount("/sub", sub_app)
    assert client.get("/sub/x").text == "mounted /sub/x"


# -- return values ----------------------------------------------------------------------------


@dataclasses.dataclass
class Point:
    x: int
    y: int


@pytest.mark.parametrize(
    ("value", "status", "content_type", "body"),
    [
        (
            {"a": 1, "nested": {"b": [1, 2]}},
            200,
            "application/json",
            b'{"a":1,"nested":{"b":[1,2]}}',
        ),
        ([1, "two", None], 200, "application/json", b'[1,"two",null]'),
        ({1: "int key"}, 200, "application/json", b'{"1":"int key"}'),
        (Point(1, 2), 200, "application/json", b'{"x":1,"y":2}'),
        (None, 200, "application/json", b"null"),
        (42, 200, "application/json", b"42"),
        ("plain", 200, "text/plain; charset=utf-8", b"plain"),
        (b"\x00\x01", 200, "application/octet-stream", b"\x00\x01"),
        (({"created": True}, 201), 201, "application/json", b'{"created":true}'),
        (([], 202), 202, "application/json", b"[]"),
        (("gone", 410), 410, "text/plain; charset=utf-8", b"gone"),
        ((HTMLResponse("<b>x</b>"), 203), 203, "text/html; charset=utf-8", b"<b>x</b>"),
        (JSONResponse({"s": 1}, status_code=299), 299, "application/json", b'{"s":1}'),
        (PlainTextResponse("raw", status_code=208), 208, "text/plain; charset=utf-8", b"raw"),
    ],
)
def test_return_values_are_coerced(
    app: PacificPy, client: TestClient, value: Any, status: int, content_type: str, body: bytes
) -> None:
    @app.get("/value")
    async def handler(request: Request) -> Any:
        return value

    response = client.get("/value")
    assert response.status_code == status
    assert response.headers["content-type"] == content_type
    assert response.content == body


def test_tuple_with_headers(app: PacificPy, client: TestClient) -> None:
    @app.post("/things")
    async def create(request: Request) -> Any:
        return {"id": 7}, 201, {"Location": "/things/7", "X-Extra": "yes"}

    response = client.post("/things")
    assert response.status_code == 201
    assert response.json() == {"id": 7}
    assert response.headers["location"] == "/things/7"
    assert response.headers["x-extra"] == "yes"


def test_response_passes_through_unchanged(app: PacificPy, client: TestClient) -> None:
    custom = Response(b"<x/>", status_code=299, media_type="application/xml")

    @app.get("/xml")
    async def xml(request: Request) -> Response:
        return custom

    response = client.get("/xml")
    assert (response.status_code, response.content) == (299, b"<x/>")
    assert response.headers["content-type"] == "application/xml"


def test_orjson_response_renders_with_orjson() -> None:
    response = ORJSONResponse({"when": "now", "n": 1})
    assert response.body == b'{"when":"now","n":1}'
    assert response.media_type == "application/json"


def test_unencodable_return_value_is_a_500(app: PacificPy, client: TestClient) -> None:
    @app.get("/bad")
    async def bad(request: Request) -> Any:
        return {"x": object()}

    assert_error(client.get("/bad"), 500, "Internal Server Error")


def test_malformed_status_tuple_headers_is_a_500(app: PacificPy, client: TestClient) -> None:
    @app.get("/bad-headers")
    async def bad(request: Request) -> Any:
        return {}, 200, ["not", "a", "mapping"]

    assert_error(client.get("/bad-headers"), 500)


# -- middleware -------------------------------------------------------------------------------


class TagMiddleware:
    def __init__(self, app: ASGIApp, tag: str) -> None:
        self.app = app
        self.tag = tag

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def tagged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-tag", self.tag.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, tagged_send)


def test_middleware_from_constructor_and_add_middleware() -> None:
    app = PacificPy(middleware=[Middleware(TagMiddleware, tag="constructor")])
    # As in Starlette, add_middleware wraps everything added before it.
    app.add_middleware(TagMiddleware, tag="added")

    @app.get("/")
    async def index(request: Request) -> dict[str, bool]:
        return {"ok": True}

    with TestClient(app) as client:
        response = client.get("/")
        # The innermost middleware adds its header first.
        assert response.headers.get_list("x-tag") == ["constructor", "added"]
        # Error responses go through user middleware too.
        not_found = client.get("/missing")
        assert not_found.status_code == 404
        assert not_found.headers.get_list("x-tag") == ["constructor", "added"]


def test_add_middleware_after_start_is_refused(app: PacificPy, client: TestClient) -> None:
    client.get("/")
    with pytest.raises(RuntimeError):
        app.add_middleware(TagMiddleware, tag="late")


def test_http_exception_raised_in_middleware_is_json() -> None:
    class GuardMiddleware:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["path"] == "/guarded":
                raise HTTPException(401, "no entry", headers={"WWW-Authenticate": "Bearer"})
            await self.app(scope, receive, send)

    app = PacificPy(middleware=[Middleware(GuardMiddleware)])
    with TestClient(app) as client:
        response = client.get("/guarded")
        assert_error(response, 401, "no entry")
        assert response.headers["www-authenticate"] == "Bearer"


def test_body_limit_holds_for_middleware_that_reads_the_body() -> None:
    class ReadingMiddleware:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await self.app(scope, receive, send)
                return
            more = True
            while more:
                message = await receive()
                more = message.get("more_body", False)
            await PlainTextResponse("read")(scope, receive, send)

    app = PacificPy(max_body_size=10, middleware=[Middleware(ReadingMiddleware)])
    with TestClient(app) as client:
        assert client.post("/", content=chunks(b"x" * 8, 3)).text == "read"
        assert_error(client.post("/", content=chunks(b"x" * 12, 3)), 413)


def test_custom_exception_handler(app: PacificPy) -> None:
    async def on_value_error(request: Any, exc: Exception) -> Response:
        return JSONResponse({"error": str(exc), "status": 422}, status_code=422)

    app.add_exception_handler(ValueError, on_value_error)

    @app.get("/value-error")
    async def raising(request: Request) -> None:
        raise ValueError("bad value")

    with TestClient(app) as client:
        assert client.get("/value-error").json() == {"error": "bad value", "status": 422}


# -- lifespan ---------------------------------------------------------------------------------


@pytest.fixture
def lifecycle_events(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    import pacificpy.background.lifecycle as lifecycle

    events: list[str] = []

    async def app_startup() -> None:
        events.append("backend-start")

    async def app_shutdown(timeout: float | None = None) -> None:
        events.append("backend-stop")

    monkeypatch.setattr(lifecycle, "app_startup", app_startup)
    monkeypatch.setattr(lifecycle, "app_shutdown", app_shutdown)
    return events


def test_startup_and_shutdown_hooks_run_in_order(lifecycle_events: list[str]) -> None:
    app = PacificPy()

    @app.on_startup
    async def async_start() -> None:
        lifecycle_events.append("async-start")

    @app.on_startup
    def sync_start() -> None:
        lifecycle_events.append("sync-start")

    @app.on_shutdown
    def sync_stop() -> None:
        lifecycle_events.append("sync-stop")

    @app.on_shutdown
    async def async_stop() -> None:
        lifecycle_events.append("async-stop")

    assert callable(async_start)  # the decorator returns the hook
    with TestClient(app) as client:
        assert lifecycle_events == ["backend-start", "async-start", "sync-start"]
        assert client.get("/nothing").status_code == 404
    assert lifecycle_events == [
        "backend-start",
        "async-start",
        "sync-start",
        "sync-stop",
        "async-stop",
        "backend-stop",
    ]


def test_failing_startup_hook_fails_startup_and_stops_backend(
    lifecycle_events: list[str],
) -> None:
    app = PacificPy()

    @app.on_startup
    def broken() -> None:
        raise RuntimeError("cannot start")

    @app.on_shutdown
    def never() -> None:
        lifecycle_events.append("user-stop")

    with pytest.raises(RuntimeError, match="cannot start"), TestClient(app):
        pass
    assert lifecycle_events == ["backend-start", "backend-stop"]


def test_failing_shutdown_hook_does_not_skip_the_rest(
    lifecycle_events: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    app = PacificPy()

    @app.on_shutdown
    def broken() -> None:
        raise RuntimeError("cannot stop")

    @app.on_shutdown
    async def fine() -> None:
        lifecycle_events.append("fine-stop")

    client = TestClient(app)
    client.__enter__()
    with caplog.at_level(logging.ERROR, logger="pacificpy.app"), pytest.raises(RuntimeError):
        client.__exit__(None, None, None)
    assert lifecycle_events == ["backend-start", "fine-stop", "backend-stop"]
    assert "shutdown hook" in caplog.text


def test_real_lifecycle_module_is_awaited() -> None:
    # Without monkeypatching: the shipped lifecycle functions run at startup and shutdown.
    app = PacificPy()
    with TestClient(app) as client:
        assert client.get("/x").status_code == 404


# -- run --------------------------------------------------------------------------------------


@pytest.fixture
def uvicorn_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, dict[str, Any]]]:
    import uvicorn

    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    return calls


def test_run_defaults(app: PacificPy, uvicorn_calls: list[tuple[Any, dict[str, Any]]]) -> None:
    app.run()
    assert uvicorn_calls == [
        (app, {"host": "127.0.0.1", "port": 8000, "loop": "uvloop", "http": "httptools"})
    ]


def test_run_passes_options_through(
    app: PacificPy, uvicorn_calls: list[tuple[Any, dict[str, Any]]]
) -> None:
    app.run(host="0.0.0.0", port=9001, loop="asyncio", log_level="warning", access_log=False)
    assert uvicorn_calls == [
        (
            app,
            {
                "host": "0.0.0.0",
                "port": 9001,
                "loop": "asyncio",
                "http": "httptools",
                "log_level": "warning",
                "access_log": False,
            },
        )
    ]


def test_run_falls_back_without_uvloop_and_httptools(
    app: PacificPy,
    uvicorn_calls: list[tuple[Any, dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        if name in ("uvloop", "httptools"):
            return None
        return real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    app.run(port=8123)
    assert uvicorn_calls[0][1] == {
        "host": "127.0.0.1",
        "port": 8123,
        "loop": "asyncio",
        "http": "h11",
    }


# -- dashboard and metrics delegation ---------------------------------------------------------


def test_dashboard_and_metrics_delegate(app: PacificPy, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, Any, dict[str, Any]]] = []
    dashboard = types.ModuleType("pacificpy.web.dashboard")
    metrics = types.ModuleType("pacificpy.web.metrics")
    dashboard.mount_dashboard = lambda app, **kw: calls.append(("dashboard", app, kw))  # type: ignore[attr-defined]
    metrics.mount_metrics = lambda app, **kw: calls.append(("metrics", app, kw))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pacificpy.web.dashboard", dashboard)
    monkeypatch.setitem(sys.modules, "pacificpy.web.metrics", metrics)

    app.include_task_dashboard()
    app.include_task_dashboard(path="/admin/tasks", token="s3cret")
    app.include_metrics()
    app.include_metrics(path="/m", token="t")
    assert calls == [
        ("dashboard", app, {"path": "/_tasks", "token": None}),
        ("dashboard", app, {"path": "/admin/tasks", "token": "s3cret"}),
        ("metrics", app, {"path": "/metrics", "token": None}),
        ("metrics", app, {"path": "/m", "token": "t"}),
    ]


# -- errors -----------------------------------------------------------------------------------


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    """A generator body: the client sends it chunked, without Content-Length."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.fixture
def echo_app() -> PacificPy:
    app = PacificPy(max_body_size=100)
    app.state.handled = 0

    @app.post("/echo")
    async def echo(request: Request) -> Any:
        app.state.handled += 1
        return await request.json()

    @app.post("/size")
    async def size(request: Request) -> dict[str, int]:
        app.state.handled += 1
        return {"size": len(await request.body())}

    @app.post("/stream")
    async def stream(request: Request) -> dict[str, int]:
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
        return {"size": total}

    @app.get("/ok")
    async def ok(request: Request) -> dict[str, bool]:
        return {"ok": True}

    return app


@pytest.fixture
def echo_client(echo_app: PacificPy) -> Iterator[TestClient]:
    with TestClient(echo_app) as test_client:
        yield test_client


def assert_still_serving(client: TestClient) -> None:
    assert client.get("/ok").json() == {"ok": True}


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b'{"a": 1', b"[1, 2,]", b"nan"],
    ids=["garbage", "empty", "truncated", "trailing-comma", "nan"],
)
def test_malformed_json_is_400(echo_client: TestClient, body: bytes) -> None:
    response = echo_client.post("/echo", content=body, headers={"content-type": "application/json"})
    assert_error(response, 400, "Malformed JSON body: ")
    assert_still_serving(echo_client)


def test_invalid_utf8_json_is_400(echo_client: TestClient) -> None:
    response = echo_client.post("/echo", content=b'{"name": "\xff\xfe"}')
    assert_error(response, 400, "Malformed JSON body: ")
    assert_still_serving(echo_client)


def test_unknown_path_is_404(echo_client: TestClient) -> None:
    body = assert_error(echo_client.get("/nowhere"), 404, "Not Found")
    assert body == {"error": "Not Found", "detail": "Not Found", "status": 404}
    assert_still_serving(echo_client)


def test_wrong_method_is_405_with_allow(echo_client: TestClient) -> None:
    response = echo_client.get("/echo")
    assert_error(response, 405, "Method Not Allowed")
    assert response.headers["allow"] == "POST"
    response = echo_client.delete("/ok")
    assert_error(response, 405)
    assert sorted(response.headers["allow"].split(", ")) == ["GET", "HEAD"]
    assert_still_serving(echo_client)


def test_body_at_the_limit_is_accepted(echo_client: TestClient) -> None:
    assert echo_client.post("/size", content=b"x" * 100).json() == {"size": 100}
    assert echo_client.post("/size", content=chunks(b"x" * 100, 7)).json() == {"size": 100}


def test_body_over_limit_by_content_length_is_413_before_the_handler(
    echo_app: PacificPy, echo_client: TestClient
) -> None:
    response = echo_client.post("/size", content=b"x" * 101)
    assert_error(response, 413, "100 bytes")
    assert echo_app.state.handled == 0
    assert_still_serving(echo_client)


@pytest.mark.parametrize("path", ["/echo", "/size", "/stream"])
def test_chunked_body_over_limit_is_413(echo_client: TestClient, path: str) -> None:
    request = echo_client.build_request("POST", path, content=chunks(b"x" * 250, 30))
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    response = echo_client.send(request)
    assert_error(response, 413, "max_body_size")
    assert_still_serving(echo_client)


def test_headers_over_limit_are_431_before_the_handler(
    echo_app: PacificPy, echo_client: TestClient
) -> None:
    response = echo_client.post("/size", content=b"x", headers={"x-big": "y" * 70_000})
    assert_error(response, 431, "max_header_size")
    assert echo_app.state.handled == 0
    assert_still_serving(echo_client)


def test_header_limit_is_configurable() -> None:
    app = PacificPy(max_header_size=None)
    assert app.max_header_size is None
    with pytest.raises(ValueError, match="max_header_size"):
        PacificPy(max_header_size=-1)
    assert PacificPy().max_header_size == 65_536


def test_default_limit_is_one_mebibyte() -> None:
    app = PacificPy()

    @app.post("/size")
    async def size(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    with TestClient(app) as client:
        limit = 1_048_576
        assert client.post("/size", content=b"x" * limit).json() == {"size": limit}
        assert_error(client.post("/size", content=b"x" * (limit + 1)), 413)
        assert_error(client.post("/size", content=chunks(b"x" * (limit + 1), 65536)), 413)


def test_limit_can_be_disabled() -> None:
    app = PacificPy(max_body_size=None)

    @app.post("/size")
    async def size(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    with TestClient(app) as client:
        assert client.post("/size", content=b"x" * 2_000_000).json() == {"size": 2_000_000}


def test_negative_limit_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_body_size"):
        PacificPy(max_body_size=-1)


def test_http_exception_gives_its_status_and_detail(app: PacificPy, client: TestClient) -> None:
    @app.get("/teapot")
    async def teapot(request: Request) -> None:
        raise HTTPException(418, "I'm a teapot", headers={"X-Brew": "no"})

    @app.get("/forbidden")
    def forbidden(request: Request) -> None:
        raise HTTPException(403)

    @app.get("/structured")
    async def structured(request: Request) -> None:
        raise HTTPException(409, {"field": "taken"})  # type: ignore[arg-type]

    response = client.get("/teapot")
    assert response.json() == {"error": "I'm a teapot", "detail": "I'm a teapot", "status": 418}
    assert response.status_code == 418
    assert response.headers["x-brew"] == "no"
    assert_error(client.get("/forbidden"), 403, "Forbidden")
    assert_error(client.get("/structured"), 409, "taken")
    assert client.get("/teapot").status_code == 418


def test_http_exception_without_body_status(app: PacificPy, client: TestClient) -> None:
    @app.get("/nothing")
    async def nothing(request: Request) -> None:
        raise HTTPException(204)

    response = client.get("/nothing")
    assert response.status_code == 204
    assert response.content == b""


def test_unhandled_exception_is_500_without_traceback(
    app: PacificPy, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    @app.get("/boom")
    async def boom(request: Request) -> None:
        raise RuntimeError("secret internal detail")

    @app.get("/ok")
    async def ok(request: Request) -> dict[str, bool]:
        return {"ok": True}

    with caplog.at_level(logging.ERROR, logger="pacificpy.app"):
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.json() == {
        "error": "Internal Server Error",
        "detail": "Internal Server Error",
        "status": 500,
    }
    assert "secret" not in response.text
    assert "Traceback" not in response.text
    # Logged once, with the traceback, by PacificPy's logger.
    records = [r for r in caplog.records if r.name == "pacificpy.app"]
    assert len(records) == 1
    assert records[0].exc_info is not None
    assert "GET /boom" in records[0].getMessage()
    assert_still_serving(client)


def test_sync_handler_exception_is_500(app: PacificPy, client: TestClient) -> None:
    @app.get("/sync-boom")
    def boom(request: Request) -> None:
        raise KeyError("nope")

    assert_error(client.get("/sync-boom"), 500, "Internal Server Error")


def test_debug_500_includes_traceback() -> None:
    app = PacificPy(debug=True)

    @app.get("/boom")
    async def boom(request: Request) -> None:
        raise RuntimeError("visible in debug")

    with TestClient(app) as client:
        response = client.get("/boom", headers={"accept": "text/html"})
    body = assert_error(response, 500, "Internal Server Error")
    assert "Traceback (most recent call last)" in body["traceback"]
    assert "RuntimeError: visible in debug" in body["traceback"]


def test_custom_500_handler_is_used(app: PacificPy) -> None:
    def on_error(request: Any, exc: Exception) -> Response:
        return PlainTextResponse(f"custom {type(exc).__name__}", status_code=500)

    app.add_exception_handler(Exception, on_error)

    @app.get("/boom")
    async def boom(request: Request) -> None:
        raise LookupError

    with TestClient(app) as client:
        response = client.get("/boom")
    assert (response.status_code, response.text) == (500, "custom LookupError")
