"""The PacificPy application: a thin layer over Starlette.

``PacificPy`` takes Starlette's constructor; routing, middleware, exception handling and
the lifespan are Starlette's. PacificPy adds route decorators, return-value coercion (see
:mod:`pacificpy.routing`), JSON errors everywhere, a request body size limit, a lifespan
around the user's that starts and drains the background backend, startup/shutdown hooks,
and :meth:`PacificPy.run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, ExceptionHandler, Lifespan

from pacificpy.errors import ConfigurationError, EnqueueError, QueueFull
from pacificpy.middleware import BodyLimitMiddleware, ServerErrorMiddleware
from pacificpy.routing import AppRouter, Handler, Route, error_response, http_error_response

__all__ = ["PacificPy"]

logger = logging.getLogger(__name__)

HandlerT = TypeVar("HandlerT", bound=Handler)
HookT = TypeVar("HookT", bound=Callable[[], Any])

DEFAULT_MAX_BODY_SIZE = 1_048_576
DEFAULT_MAX_HEADER_SIZE = 65_536
DEFAULT_PORT = 8000
# Retry-After (seconds) of the 503 for a task that could not be enqueued: a full local queue
# drains within a second or so; an unreachable broker takes longer to come back.
RETRY_AFTER_QUEUE_FULL = 1
RETRY_AFTER_BACKEND_DOWN = 5


class PacificPy(Starlette):
    """A PacificPy application: an ASGI callable built on Starlette.

    The positional arguments are Starlette's, in Starlette's order, so an app written for
    ``Starlette(...)`` runs as ``PacificPy(...)``; PacificPy's own options are keyword-only.

    Args:
        debug: when true, a 500 response carries the exception's traceback as
            ``"traceback"``. Never turn it on in production.
        routes: Starlette routes (``Route``, ``Mount``, ``WebSocketRoute``, ...), served
            as Starlette serves them; the decorators add PacificPy routes beside them.
        middleware: Starlette ``Middleware`` entries, outermost first.
        exception_handlers: Starlette's mapping of exception classes or status codes to
            ``handler(request, exc)``; ``HTTPException`` and ``EnqueueError`` have
            PacificPy's JSON handlers unless given here.
        lifespan: Starlette's lifespan context (``app -> async context manager``). It runs
            inside PacificPy's own: the task backend starts before it and drains after it,
            and the state it yields reaches ``request.state``.
        max_body_size: the largest request body accepted, in bytes (default 1 MiB). A
            larger one gets a JSON 413. ``None`` disables the limit. A route's or mount's
            own ``max_body_size`` replaces it for that route, higher or lower.
        max_header_size: the largest total size of the request's header names and values
            (default 64 KiB); larger gets a JSON 431. ``None`` disables the check.
        shutdown_timeout: seconds the shutdown waits for queued and running background
            tasks before marking the rest ``abandoned``. ``None`` (the default) keeps the
            backend's own ``shutdown_timeout`` (30 s unless the backend was built with
            another); a number overrides it for this app's shutdown.

    The lifespan refuses to start outside asyncio (under trio, say) with a
    ``ConfigurationError``: the task layer is asyncio's.

    Every error answers JSON ``{"error": message, "detail": message, "status": code}``:
    400 for a malformed JSON body, 404 for an unknown path, 405 (with ``Allow``) for a
    method the path does not take, 413 for a body over ``max_body_size``, the given status
    for ``HTTPException(status, detail)``, 503 with ``Retry-After`` when a handler lets an
    ``EnqueueError`` or ``QueueFull`` escape (the log says which task and why), and 500
    ``Internal Server Error`` for any other exception, which is also logged with its
    traceback.
    """

    def __init__(
        self,
        debug: bool = False,
        routes: Sequence[BaseRoute] | None = None,
        middleware: Sequence[Middleware] | None = None,
        exception_handlers: Mapping[Any, ExceptionHandler] | None = None,
        lifespan: Lifespan[Any] | None = None,
        *,
        max_body_size: int | None = DEFAULT_MAX_BODY_SIZE,
        max_header_size: int | None = DEFAULT_MAX_HEADER_SIZE,
        shutdown_timeout: float | None = None,
    ) -> None:
        if max_body_size is not None and max_body_size < 0:
            raise ValueError(f"max_body_size must be >= 0 or None, not {max_body_size!r}")
        if max_header_size is not None and max_header_size < 0:
            raise ValueError(f"max_header_size must be >= 0 or None, not {max_header_size!r}")
        super().__init__(debug=debug, middleware=middleware, exception_handlers=exception_handlers)
        # The user's lifespan always runs inside PacificPy's (see _lifespan), also when it
        # is set later through router.lifespan_context.
        self.router = AppRouter(routes, lifespan=lifespan, around=self._lifespan)
        # Starlette's own limit answers in plain text; PacificPy installs its own (JSON).
        self.max_body_size = max_body_size
        self.max_header_size = max_header_size
        self.shutdown_timeout = shutdown_timeout
        self._startup_hooks: list[Callable[[], Any]] = []
        self._shutdown_hooks: list[Callable[[], Any]] = []
        self.exception_handlers.setdefault(HTTPException, _http_exception_handler)
        self.exception_handlers.setdefault(EnqueueError, _enqueue_error_handler)

    # -- routes ---------------------------------------------------------------------------

    def add_route(
        self,
        path: str,
        route: Handler,
        methods: Collection[str] | None = None,
        name: str | None = None,
        include_in_schema: bool = True,
        *,
        max_body_size: int | None = None,
    ) -> None:
        """Serve ``path`` with ``route`` for ``methods`` (default ``["GET"]`` for a handler).

        A handler (a function, or an object called with the request) gets a PacificPy
        request and its return value is coerced into a response (see
        :mod:`pacificpy.routing`). An endpoint class (``HTTPEndpoint``) or an ASGI app is
        served as it is, as in Starlette (all methods unless ``methods`` is given).
        ``max_body_size`` replaces the application's body limit for this route, higher or
        lower. Routes may be added at any time, also after the application has started
        serving.
        """
        self.router.routes.append(
            Route(
                path,
                route,
                methods=methods,
                name=name,
                include_in_schema=include_in_schema,
                max_body_size=max_body_size,
            )
        )

    def route(
        self,
        path: str,
        methods: Collection[str] | None = None,
        *,
        name: str | None = None,
        include_in_schema: bool = True,
        max_body_size: int | None = None,
    ) -> Callable[[HandlerT], HandlerT]:
        """Decorate a handler to serve ``path`` for ``methods`` (default ``["GET"]``).

        ``path`` uses Starlette's syntax, e.g. ``/users/{user_id:int}``; the converted
        values are in ``request.path_params``. ``max_body_size`` replaces the
        application's body limit for this route, higher or lower. The decorated function
        is returned unchanged, so it can still be called directly.
        """

        def decorator(handler: HandlerT) -> HandlerT:
            self.add_route(
                path,
                handler,
                methods=methods,
                name=name,
                include_in_schema=include_in_schema,
                max_body_size=max_body_size,
            )
            return handler

        return decorator

    def get(self, path: str, **options: Any) -> Callable[[HandlerT], HandlerT]:
        """Decorate a handler for ``GET path`` (``HEAD`` is answered too)."""
        return self.route(path, methods=["GET"], **options)

    def post(self, path: str, **options: Any) -> Callable[[HandlerT], HandlerT]:
        """Decorate a handler for ``POST path``."""
        return self.route(path, methods=["POST"], **options)

    def put(self, path: str, **options: Any) -> Callable[[HandlerT], HandlerT]:
        """Decorate a handler for ``PUT path``."""
        return self.route(path, methods=["PUT"], **options)

    def patch(self, path: str, **options: Any) -> Callable[[HandlerT], HandlerT]:
        """Decorate a handler for ``PATCH path``."""
        return self.route(path, methods=["PATCH"], **options)

    def delete(self, path: str, **options: Any) -> Callable[[HandlerT], HandlerT]:
        """Decorate a handler for ``DELETE path``."""
        return self.route(path, methods=["DELETE"], **options)

    def mount(
        self, path: str, app: ASGIApp, name: str | None = None, *, max_body_size: int | None = None
    ) -> None:
        """Serve every path under ``path`` with the ASGI application ``app``.

        ``max_body_size`` replaces the application's body limit under ``path``.
        """
        self.router.routes.append(Mount(path, app=app, name=name, max_body_size=max_body_size))

    # -- lifespan ---------------------------------------------------------------------------

    def on_startup(self, hook: HookT) -> HookT:
        """Register ``hook`` (sync or async, no arguments) to run at startup, in order.

        The background backend is started before the first hook runs. A hook that raises
        makes the startup fail.
        """
        self._startup_hooks.append(hook)
        return hook

    def on_shutdown(self, hook: HookT) -> HookT:
        """Register ``hook`` (sync or async, no arguments) to run at shutdown, in order.

        Every hook runs even if an earlier one raised (the error is logged, and the first
        one re-raised once the background backend has been drained).
        """
        self._shutdown_hooks.append(hook)
        return hook

    @contextlib.asynccontextmanager
    async def _lifespan(
        self, user_lifespan: Callable[[Any], AbstractAsyncContextManager[Any]], app: Any
    ) -> AsyncIterator[Any]:
        """The application's lifespan: the task backend around the user's lifespan.

        Startup: the backend, then the user's ``lifespan`` (its state is yielded, so it
        reaches ``request.state``), then the ``on_startup`` hooks. Shutdown in reverse:
        the ``on_shutdown`` hooks, the user's lifespan, then the backend drains.
        """
        from pacificpy.background.lifecycle import app_shutdown, app_startup

        require_asyncio()
        await app_startup()
        first_error: BaseException | None = None
        try:
            async with user_lifespan(app) as state:
                for hook in self._startup_hooks:
                    await _call_hook(hook)
                try:
                    yield state
                finally:
                    first_error = await self._run_shutdown_hooks()
        finally:
            await self._shutdown_backend(app_shutdown)
        if first_error is not None:
            raise first_error

    async def _run_shutdown_hooks(self) -> BaseException | None:
        """Run every shutdown hook; log each failure and return the first."""
        first_error: BaseException | None = None
        for hook in self._shutdown_hooks:
            try:
                await _call_hook(hook)
            except Exception as exc:
                logger.exception("shutdown hook %r failed", hook)
                first_error = first_error or exc
        return first_error

    async def _shutdown_backend(self, app_shutdown: Callable[..., Any]) -> None:
        # None keeps the backend's own shutdown_timeout; a number overrides it.
        if self.shutdown_timeout is None:
            await app_shutdown()
        else:
            await app_shutdown(timeout=self.shutdown_timeout)

    # -- middleware stack -------------------------------------------------------------------

    def build_middleware_stack(self) -> ASGIApp:
        """Build Starlette's stack with PacificPy's JSON error and body-limit middleware.

        Outermost first: the JSON server-error middleware, the body-size limit, the user's
        middleware, Starlette's ``ExceptionMiddleware`` (``HTTPException`` and registered
        handlers), then the router.
        """
        error_handler: ExceptionHandler | None = None
        handlers: dict[Any, ExceptionHandler] = {}
        for key, value in self.exception_handlers.items():
            if key in (500, Exception):
                error_handler = value
            else:
                handlers[key] = value
        middleware = [
            Middleware(ServerErrorMiddleware, debug=self.debug, handler=error_handler),
            Middleware(
                BodyLimitMiddleware,
                max_body_size=self.max_body_size,
                max_header_size=self.max_header_size,
            ),
            *self.user_middleware,
            Middleware(ExceptionMiddleware, handlers=handlers, debug=self.debug),
        ]
        app: ASGIApp = self.router
        for cls, args, kwargs in reversed(middleware):
            app = cls(app, *args, **kwargs)
        return app

    # -- serving ----------------------------------------------------------------------------

    def run(self, host: str = "127.0.0.1", port: int | None = None, **uvicorn_options: Any) -> None:
        """Serve the application with uvicorn until interrupted.

        ``port`` defaults to the ``PORT`` environment variable, else 8000.
        ``loop`` defaults to ``"uvloop"`` and ``http`` to ``"httptools"`` when they are
        installed (``asyncio`` and ``h11`` otherwise); every other keyword goes to
        ``uvicorn.run`` as it is. ``reload`` and ``workers`` need an import string, so use
        ``pacificpy run module:app --reload`` for those.
        """
        import uvicorn

        options = {**server_defaults(), **uvicorn_options}
        uvicorn.run(self, host=host, port=default_port() if port is None else port, **options)

    # -- background-task integrations ---------------------------------------------------------

    def include_task_dashboard(self, path: str = "/_tasks", token: str | None = None) -> None:
        """Serve the task dashboard (HTML page and JSON API) under ``path``.

        The page holds no data and asks for the token (a form, or a ``#token=`` fragment);
        with ``token`` set, every JSON route needs ``Authorization: Bearer <token>``.
        Without one, the mutating routes (requeue, purge) answer 403.

        Raises:
            ConfigurationError: ``token`` is empty or blank.
        """
        from pacificpy.web.dashboard import mount_dashboard

        mount_dashboard(self, path=path, token=token)

    def include_metrics(self, path: str = "/metrics", token: str | None = None) -> None:
        """Serve Prometheus metrics at ``path``, requiring ``Authorization: Bearer <token>``
        when ``token`` is given.

        Raises:
            ConfigurationError: ``token`` is empty or blank.
        """
        from pacificpy.web.metrics import mount_metrics

        mount_metrics(self, path=path, token=token)

    def include_task_events(
        self,
        path: str = "/_tasks/events",
        token: str | None = None,
        *,
        secret: str | bytes | None = None,
    ) -> None:
        """Serve live events of one task at ``GET path/{task_id}`` (Server-Sent Events:
        status and progress until it ends), to the token or a URL signed for that task
        (``handle.events_url(app)``); see :mod:`pacificpy.web.events` for the secret.

        Raises:
            ConfigurationError: ``token`` is empty or blank, or ``secret`` too short.
        """
        from pacificpy.web.events import mount_task_events

        mount_task_events(self, path=path, token=token, secret=secret)

    def include_health(self, path: str = "/healthz", timeout: float = 2.0) -> None:
        """Serve ``GET path/live`` (200 while the process serves) and ``GET path/ready``
        (200 when the background backend and the task monitor store answer within
        ``timeout`` seconds, else 503 with JSON naming what failed).

        Raises:
            ValueError: ``timeout`` is not a positive number.
        """
        from pacificpy.web.health import mount_health

        mount_health(self, path=path, timeout=timeout)


def default_port() -> int:
    """The ``PORT`` environment variable as a port number, else 8000.

    Raises:
        ValueError: ``PORT`` is set but is not a port number.
    """
    raw = os.environ.get("PORT", "").strip()
    if not raw:
        return DEFAULT_PORT
    if not raw.isdigit() or not 0 <= int(raw) <= 65535:
        raise ValueError(f"PORT={raw!r} is not a port number (0-65535)")
    return int(raw)


def server_defaults() -> dict[str, str]:
    """Return uvicorn's ``loop`` and ``http`` choices: uvloop and httptools when installed."""
    return {
        "loop": "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") is not None else "h11",
    }


def require_asyncio() -> None:
    """Refuse to start outside an asyncio event loop (under trio, say).

    The task layer is asyncio's: the local executor runs async tasks on the serving loop,
    handles are asyncio futures, and the Redis and ARQ clients are asyncio clients.

    Raises:
        ConfigurationError: no asyncio event loop is running here.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        library = "trio" if "trio" in sys.modules else "another async library"
        raise ConfigurationError(
            f"PacificPy cannot start under {library}: its background-task layer runs on "
            "asyncio. Serve the app on an asyncio event loop (uvicorn's default, "
            'hypercorn --worker-class asyncio, TestClient(app, backend="asyncio"))'
        ) from None


async def _call_hook(hook: Callable[[], Any]) -> None:
    result = hook()
    if inspect.isawaitable(result):
        await result


async def _http_exception_handler(request: StarletteRequest, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return http_error_response(exc)


async def _enqueue_error_handler(request: StarletteRequest, exc: Exception) -> Response:
    """A task the handler could not enqueue: 503 and ``Retry-After``, the cause in the log.

    The body names no broker address or credential: those go to the log only.
    """
    assert isinstance(exc, EnqueueError)
    full = isinstance(exc, QueueFull)
    logger.warning(
        "%s %s answered 503: task %s %s was not enqueued: %s",
        request.method,
        request.url.path,
        exc.task_name or "?",
        exc.task_id or "?",
        exc,
    )
    message = (
        "the task queue is full; retry later"
        if full
        else "the task backend is unavailable; retry later"
    )
    retry_after = RETRY_AFTER_QUEUE_FULL if full else RETRY_AFTER_BACKEND_DOWN
    return error_response(503, message, headers={"Retry-After": str(retry_after)})
