"""Coming from Starlette: Starlette's constructor, lifespan, routes, body limits and errors.

Starlette's own suite runs against PacificPy in ``tests/compat``; these tests pin what
PacificPy adds around Starlette's behaviour (the task backend around the user's lifespan,
JSON 413s at every level, the trio refusal) and the fixes of issue 20.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request as StarletteRequest
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.types import Message, Receive, Scope, Send

from pacificpy import PacificPy
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import LocalExecutor, get_local_executor
from pacificpy.errors import ConfigurationError
from pacificpy.routing import Request
from pacificpy.testing import TestClient
from tests.test_app import assert_error

finished: list[str] = []


@background
def note(label: str) -> str:
    time.sleep(0.05)
    finished.append(label)
    return label


@pytest.fixture
def executor() -> LocalExecutor:
    executor = get_local_executor(max_workers=2)
    configure_background_tasks(executor)
    return executor


async def echo(request: StarletteRequest) -> Response:
    return Response(await request.body())


# -- the constructor ----------------------------------------------------------------------


def test_constructor_takes_starlettes_arguments_in_starlettes_order() -> None:
    events: list[str] = []

    class Tag(BaseHTTPMiddleware):
        async def dispatch(self, request: StarletteRequest, call_next: Any) -> Response:
            response: Response = await call_next(request)
            response.headers["x-tag"] = "yes"
            return response

    async def teapot(request: StarletteRequest, exc: Exception) -> Response:
        return PlainTextResponse("no such teapot", status_code=418)

    @contextlib.asynccontextmanager
    async def lifespan(app: PacificPy) -> AsyncIterator[None]:
        events.append("up")
        yield
        events.append("down")

    app = PacificPy(
        True,
        [Route("/", echo, methods=["POST"])],
        [Middleware(Tag)],
        {404: teapot},
        lifespan,
    )
    assert app.debug is True
    with TestClient(app) as client:
        response = client.post("/", content=b"hello")
        assert (response.status_code, response.content) == (200, b"hello")
        assert response.headers["x-tag"] == "yes"
        assert client.get("/nowhere").status_code == 418
        assert events == ["up"]
    assert events == ["up", "down"]


def test_pacificpy_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        PacificPy(False, None, None, None, None, 10)  # type: ignore[misc]
    app = PacificPy(max_body_size=10, max_header_size=None, shutdown_timeout=1.0)
    assert (app.max_body_size, app.max_header_size, app.shutdown_timeout) == (10, None, 1.0)


# -- lifespan -------------------------------------------------------------------------------


def test_user_lifespan_runs_inside_the_backend_and_its_state_reaches_requests(
    executor: LocalExecutor,
) -> None:
    seen: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: PacificPy) -> AsyncIterator[dict[str, Any]]:
        # The backend is already started, on this (the serving) loop.
        seen["started_on_loop"] = executor._loop is asyncio.get_running_loop()
        yield {"db": "connected"}
        # Still serving tasks: the backend drains after this lifespan has ended.
        seen["still_started"] = executor._loop is not None
        await note.delay("from-lifespan-exit")

    app = PacificPy(lifespan=lifespan)

    @app.get("/state")
    async def state(request: Request) -> dict[str, str]:
        return {"db": request.state.db}

    finished.clear()
    with TestClient(app) as client:
        assert client.get("/state").json() == {"db": "connected"}
    assert seen == {"started_on_loop": True, "still_started": True}
    assert executor._loop is None  # drained and stopped
    assert finished == ["from-lifespan-exit"]  # the drain waited for it


def test_hooks_run_inside_the_user_lifespan_in_order(executor: LocalExecutor) -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: PacificPy) -> AsyncIterator[None]:
        events.append("lifespan up")
        yield
        events.append("lifespan down")

    app = PacificPy(lifespan=lifespan)
    app.on_startup(lambda: events.append("hook up"))
    app.on_shutdown(lambda: events.append("hook down"))

    @app.get("/")
    async def index(request: Request) -> str:
        return "ok"

    with TestClient(app) as client:
        assert client.get("/").text == "ok"
    assert events == ["lifespan up", "hook up", "hook down", "lifespan down"]


def test_lifespan_context_set_later_still_starts_the_backend(executor: LocalExecutor) -> None:
    seen: list[bool] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, str]]:
        seen.append(executor._loop is asyncio.get_running_loop())
        yield {"source": "router.lifespan_context"}

    app = PacificPy()
    app.router.lifespan_context = lifespan  # as FastAPI and some test suites do

    @app.get("/")
    async def index(request: Request) -> str:
        return str(request.state.source)

    with TestClient(app) as client:
        assert client.get("/").text == "router.lifespan_context"
    assert seen == [True]
    assert executor._loop is None


def test_failing_user_lifespan_stops_the_backend_again(executor: LocalExecutor) -> None:
    @contextlib.asynccontextmanager
    async def lifespan(app: PacificPy) -> AsyncIterator[None]:
        raise RuntimeError("database down")
        yield  # pragma: no cover

    app = PacificPy(lifespan=lifespan)
    with pytest.raises(RuntimeError, match="database down"), TestClient(app):
        pass  # pragma: no cover
    assert executor._loop is None


def test_app_refuses_to_start_under_trio_with_a_clear_error() -> None:
    pytest.importorskip("trio")
    app = PacificPy()

    @app.get("/")
    async def index(request: Request) -> str:
        return "served"

    with pytest.raises(ConfigurationError, match=r"trio.*asyncio"), TestClient(app, backend="trio"):
        pass  # pragma: no cover
    # Without the lifespan (no task backend to start) requests are served under trio.
    assert TestClient(app, backend="trio").get("/").text == "served"


# -- add_route -------------------------------------------------------------------------------


def test_add_route_serves_endpoint_classes_and_asgi_apps_as_starlette_does() -> None:
    class Things(HTTPEndpoint):
        async def get(self, request: StarletteRequest) -> Response:
            return PlainTextResponse("listed")

        async def post(self, request: StarletteRequest) -> Response:
            return PlainTextResponse("created", status_code=201)

    class RawApp:
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await PlainTextResponse(f"raw {scope['method']}")(scope, receive, send)

    class HandlerObject:
        def __call__(self, request: Request) -> dict[str, str]:
            return {"kind": "handler object"}

    app = PacificPy()
    app.add_route("/things", Things)
    app.add_route("/raw", RawApp())
    app.add_route("/object", HandlerObject())
    app.add_route("/function", lambda request: {"kind": "function"})

    with TestClient(app) as client:
        assert client.get("/things").text == "listed"
        assert client.post("/things").status_code == 201
        assert client.put("/things").status_code == 405  # the endpoint class says so
        assert client.delete("/raw").text == "raw DELETE"  # every method, as in Starlette
        assert client.get("/object").json() == {"kind": "handler object"}
        assert client.get("/function").json() == {"kind": "function"}
        assert_error(client.post("/function"), 405)


# -- body limits -------------------------------------------------------------------------


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_route_and_mount_limits_raise_or_lower_the_apps_and_answer_json(chunked: bool) -> None:
    app = PacificPy(
        routes=[
            Route("/starlette-upload", echo, methods=["POST"], max_body_size=20),
            Mount("/mounted", routes=[Route("/", echo, methods=["POST"])], max_body_size=20),
        ],
        max_body_size=10,
    )

    @app.post("/default")
    async def default(request: Request) -> bytes:
        return await request.body()

    @app.post("/upload", max_body_size=20)
    async def upload(request: Request) -> bytes:
        return await request.body()

    @app.post("/tiny", max_body_size=3)
    async def tiny(request: Request) -> bytes:
        return await request.body()

    def body(size: int) -> Any:
        data = b"x" * size
        return chunks(data, 4) if chunked else data

    with TestClient(app) as client:
        assert_error(client.post("/default", content=body(15)), 413, "limit of 10 bytes")
        for path in ("/upload", "/starlette-upload", "/mounted/"):
            assert client.post(path, content=body(15)).content == b"x" * 15, path
            assert_error(client.post(path, content=body(25)), 413, "limit of 20 bytes")
        assert client.post("/tiny", content=body(3)).content == b"xxx"
        assert_error(client.post("/tiny", content=body(5)), 413, "limit of 3 bytes")


def test_route_limit_applies_without_an_app_limit_and_answers_json() -> None:
    app = PacificPy(max_body_size=None)
    app.add_route("/small", echo, methods=["POST"], max_body_size=4)
    app.mount("/files", Starlette(routes=[Route("/", echo, methods=["POST"])]), max_body_size=4)

    with TestClient(app) as client:
        assert client.post("/small", content=b"abcd").content == b"abcd"
        assert_error(client.post("/small", content=b"abcde"), 413, "limit of 4 bytes")
        assert_error(client.post("/files/", content=b"abcde"), 413, "limit of 4 bytes")


def test_route_limit_is_refused_before_the_handler_runs() -> None:
    calls: list[str] = []
    app = PacificPy(max_body_size=100)

    @app.post("/small", max_body_size=4)
    async def small(request: Request) -> str:
        calls.append("ran")
        return "ok"

    with TestClient(app) as client:
        assert_error(client.post("/small", content=b"abcde"), 413, "limit of 4 bytes")
    assert calls == []


def test_stricter_route_refuses_a_body_middleware_already_read() -> None:
    async def read_body(request: StarletteRequest, call_next: Any) -> Response:
        await request.body()
        response: Response = await call_next(request)
        return response

    app = PacificPy(
        routes=[Route("/", echo, methods=["POST"], max_body_size=5)],
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=read_body)],
        max_body_size=10,
    )
    with TestClient(app) as client:
        assert_error(client.post("/", content=b"123456"), 413)


def test_app_inside_a_limiting_app_only_lowers_its_limit() -> None:
    inner = PacificPy(routes=[Route("/", echo, methods=["POST"])])  # 1 MiB by default
    outer = Starlette(routes=[Mount("/api", app=inner)], max_body_size=5)
    with TestClient(outer) as client:
        assert client.post("/api/", content=b"12345").content == b"12345"
        assert client.post("/api/", content=b"123456").status_code == 413
    tighter = PacificPy(routes=[Route("/", echo, methods=["POST"])], max_body_size=3)
    outer = Starlette(routes=[Mount("/api", app=tighter)], max_body_size=5)
    with TestClient(outer) as client:
        # The outer app's own body limit answers (Starlette's, in plain text).
        assert client.post("/api/", content=b"1234").status_code == 413
        assert client.post("/api/", content=b"123").content == b"123"


async def test_scope_without_headers_is_treated_as_empty() -> None:
    app = PacificPy()

    @app.post("/")
    async def index(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"abc", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "POST", "path": "/", "query_string": b""}
    await app(scope, receive, send)
    assert sent[0]["status"] == 200
    assert sent[1]["body"] == b'{"size":3}'


# -- errors ------------------------------------------------------------------------------


def test_exception_handler_sees_errors_after_the_response_started() -> None:
    seen: list[str] = []

    async def report(request: StarletteRequest, exc: Exception) -> Response:
        seen.append(f"{request.url.path}: {exc}")
        return PlainTextResponse("reported", status_code=500)

    app = PacificPy(exception_handlers={Exception: report})

    @app.get("/stream")
    async def stream(request: Request) -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            yield b"first part"
            raise RuntimeError("broke mid-stream")

        return StreamingResponse(parts())

    @app.get("/early")
    async def early(request: Request) -> str:
        raise RuntimeError("broke early")

    with TestClient(app) as client:
        early_response = client.get("/early")
        assert (early_response.status_code, early_response.text) == (500, "reported")
        # Nothing more can be sent once the response started: the error goes on to the
        # server (the test client raises it), and the handler has seen it first.
        with pytest.raises(RuntimeError, match="broke mid-stream"):
            client.get("/stream")
    assert seen == ["/early: broke early", "/stream: broke mid-stream"]


def test_reraising_handler_restores_starlettes_server_exceptions() -> None:
    def reraise(request: StarletteRequest, exc: Exception) -> Response:
        raise exc

    app = PacificPy(exception_handlers={Exception: reraise})

    @app.get("/")
    async def index(request: Request) -> str:
        raise LookupError("for the test client")

    with TestClient(app) as client, pytest.raises(LookupError, match="for the test client"):
        client.get("/")


def test_plain_text_recipe_restores_starlettes_error_bodies() -> None:
    async def plain(request: StarletteRequest, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return PlainTextResponse(exc.detail, exc.status_code, headers=exc.headers)

    app = PacificPy(exception_handlers={StarletteHTTPException: plain})

    @app.post("/only-post")
    async def only_post(request: Request) -> str:
        return "ok"

    with TestClient(app) as client:
        missing = client.get("/nowhere")
        assert (missing.status_code, missing.text) == (404, "Not Found")
        wrong = client.get("/only-post")
        assert (wrong.status_code, wrong.text, wrong.headers["allow"]) == (
            405,
            "Method Not Allowed",
            "POST",
        )
