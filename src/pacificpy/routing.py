"""Routes, requests and the coercion of handler return values into responses.

A PacificPy handler is ``async def handler(request)`` (or a plain ``def``, which runs in
Starlette's thread pool) and may return:

* a Starlette :class:`~starlette.responses.Response`, sent as it is;
* a ``dict``, ``list`` or any other value orjson can encode (``None`` included), sent as
  JSON with status 200;
* a ``str``, sent as ``text/plain``; ``bytes``, sent as ``application/octet-stream``;
* a ``(body, status)`` or ``(body, status, headers)`` tuple, whose body is coerced as
  above and sent with that status and those extra headers.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar, cast

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware import body_limit as _starlette_body_limit
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.requests import Request as StarletteRequest
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute
from starlette.routing import Route as StarletteRoute
from starlette.routing import Router as StarletteRouter
from starlette.types import ASGIApp, Lifespan, Receive, Scope, Send

__all__ = [
    "AppRouter",
    "Handler",
    "ORJSONResponse",
    "Request",
    "Route",
    "body_too_large",
    "coerce_response",
    "error_response",
    "http_error_response",
]

Handler = Callable[..., Any]
"""A request handler: ``(request) -> value`` or ``async (request) -> value``."""

HandlerT = TypeVar("HandlerT", bound=Handler)

_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS


class ORJSONResponse(Response):
    """A JSON response encoded with orjson.

    orjson also encodes dataclasses, ``datetime``, ``UUID`` and ``enum`` values; dict keys
    that are not strings (ints, for instance) are converted to strings as ``json`` does.

    Raises:
        TypeError: when rendering a value orjson cannot encode (``orjson.JSONEncodeError``).
    """

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_ORJSON_OPTIONS)


class Request(StarletteRequest):
    """The request passed to PacificPy handlers: Starlette's, with an orjson ``json()``.

    ``path_params``, ``query_params``, ``headers``, ``body()`` and ``stream()`` are
    Starlette's. The body size limit of the application (``max_body_size``) applies to
    every way of reading the body.
    """

    async def json(self) -> Any:
        """Parse the body as JSON (once; later calls return the same value).

        Raises:
            HTTPException: 400 ``Malformed JSON body: ...`` when the body is empty, is not
                valid JSON or is not valid UTF-8; 413 when it exceeds ``max_body_size``.
        """
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise HTTPException(400, f"Malformed JSON body: {exc}") from exc
        return self._json


def error_response(
    status_code: int,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    """Build PacificPy's JSON error body ``{"error": ..., "detail": ..., "status": ...}``.

    Args:
        status_code: the HTTP status.
        message: a human-readable message, used for both ``error`` and ``detail``.
        headers: extra response headers (``Allow`` for a 405, for instance).
        extra: more keys for the body (``traceback`` in debug mode).
    """
    if status_code in (204, 304):
        # These statuses must not carry a body.
        return Response(status_code=status_code, headers=headers)
    content: dict[str, Any] = {"error": message, "detail": message, "status": status_code}
    if extra:
        content.update(extra)
    return ORJSONResponse(content, status_code=status_code, headers=headers)


def http_error_response(exc: HTTPException) -> Response:
    """The JSON error response for ``exc``: its status, detail and headers."""
    detail = exc.detail
    message = detail if isinstance(detail, str) else str(detail)
    return error_response(exc.status_code, message, headers=exc.headers)


def coerce_response(value: Any) -> Response:
    """Turn a handler's return value into a response (see the module docstring).

    Raises:
        TypeError: for a status tuple whose headers are not a mapping, or (when the
            response renders) a body orjson cannot encode.
    """
    if isinstance(value, Response):
        return value
    if isinstance(value, tuple) and len(value) in (2, 3) and isinstance(value[1], int):
        body, status_code = value[0], value[1]
        headers = value[2] if len(value) == 3 else None
        if headers is not None and not isinstance(headers, Mapping):
            raise TypeError(
                "the third item of a (body, status, headers) tuple must be a mapping of "
                f"header names to values, not {type(headers).__name__}"
            )
        response = coerce_response(body)
        response.status_code = status_code
        if headers:
            for key, header_value in headers.items():
                response.headers[key] = header_value
        return response
    if isinstance(value, str):
        return PlainTextResponse(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Response(bytes(value), media_type="application/octet-stream")
    return ORJSONResponse(value)


def is_async_callable(obj: Any) -> bool:
    """Whether calling ``obj`` gives an awaitable (partials and callable objects too)."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    return inspect.iscoroutinefunction(obj) or (
        callable(obj) and inspect.iscoroutinefunction(obj.__call__)
    )


# The body limit in force for a request lives in its scope under this key (Starlette's own,
# private to it, hence the fallback): an object with ``max_body_size``, ``total_size`` and
# ``content_length``. Starlette's route-, mount- and router-level ``max_body_size`` replaces
# its ``max_body_size`` for the requests they serve, higher or lower.
BODY_LIMIT_SCOPE_KEY: str = getattr(
    _starlette_body_limit, "_BODY_LIMIT_RESPONDER_SCOPE_KEY", "starlette._body_limit_responder"
)


def body_too_large(limit: int) -> HTTPException:
    """The 413 for a request body over ``limit`` bytes (answered as a JSON error)."""
    return HTTPException(
        413, f"Request body is larger than the limit of {limit} bytes (max_body_size)"
    )


def content_length(scope: Scope) -> int | None:
    """The request's ``Content-Length`` as a number; ``None`` when absent or not a number.

    A scope without ``headers`` counts as one with no headers.
    """
    for key, value in scope.get("headers") or ():
        if key.lower() == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _request_response(handler: Handler) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """Wrap ``handler`` as an ASGI app that builds a :class:`Request` and coerces the result.

    A ``Content-Length`` over the body limit in force for this route (the application's,
    or the route's or mount's own ``max_body_size``) is refused before the handler runs.
    """
    is_async = is_async_callable(handler)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        limiter = scope.get(BODY_LIMIT_SCOPE_KEY)
        if limiter is not None:
            length, limit = limiter.content_length, limiter.max_body_size
            if length is not None and limit is not None and length > limit:
                raise body_too_large(limit)
        request = Request(scope, receive, send)
        if is_async:
            result = await handler(request)
        else:
            result = await run_in_threadpool(handler, request)
        response = coerce_response(result)
        await response(scope, receive, send)

    return app


def is_asgi_endpoint(endpoint: Any) -> bool:
    """Whether Starlette would serve ``endpoint`` as an ASGI app rather than a handler.

    A class (an ``HTTPEndpoint``, say) is ASGI, as in Starlette. So is a callable object
    whose ``__call__`` takes three positional arguments, ``(scope, receive, send)``; a
    callable object taking one, ``(request)``, is a handler.
    """
    target = endpoint
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.isfunction(target) or inspect.ismethod(target):
        return False
    if inspect.isclass(target):
        return True
    try:
        signature = inspect.signature(endpoint)
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(positional) == 3


class Route(StarletteRoute):
    """A Starlette route whose endpoint is a PacificPy handler.

    A function (or a callable object taking the request) gets a PacificPy
    :class:`Request` and its return value goes through :func:`coerce_response`. An
    endpoint class (``HTTPEndpoint``) or an ASGI app is served as it is, as Starlette
    does. Errors are left to the application's exception handlers, which answer in JSON.
    ``middleware`` and ``max_body_size`` are Starlette's: middleware around this route
    only, and a body limit that replaces the application's for this route (higher or
    lower).
    """

    def __init__(
        self,
        path: str,
        endpoint: Handler,
        *,
        methods: Collection[str] | None = None,
        name: str | None = None,
        include_in_schema: bool = True,
        middleware: Sequence[Middleware] | None = None,
        max_body_size: int | None = None,
    ) -> None:
        asgi = is_asgi_endpoint(endpoint)
        if methods is None and not asgi:
            methods = ["GET"]
        super().__init__(
            path,
            endpoint,
            methods=None if methods is None else list(methods),
            name=name,
            include_in_schema=include_in_schema,
        )
        # Starlette treats a callable object as a raw ASGI app; a PacificPy handler object
        # takes the request, so only ASGI-shaped endpoints are served as they are.
        app: ASGIApp = endpoint if asgi else _request_response(endpoint)
        for cls, args, kwargs in reversed(middleware or ()):
            app = cls(app, *args, **kwargs)
        if max_body_size is not None:
            app = RequestBodyLimitMiddleware(app, max_body_size=max_body_size)
        self.app = app


_UserLifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


class AppRouter(StarletteRouter):
    """Starlette's router whose lifespan always runs inside the application's own.

    ``around(user_lifespan, app)`` is the application's lifespan: it starts what the
    application needs, enters the user's lifespan and yields its state. The user's
    lifespan is the constructor's ``lifespan=``, and setting ``router.lifespan_context``
    later (as some libraries and tests do) replaces it, still inside the application's.
    """

    def __init__(
        self,
        routes: Sequence[BaseRoute] | None,
        *,
        lifespan: Lifespan[Any] | None,
        around: Callable[[_UserLifespan, Any], AbstractAsyncContextManager[Any]],
    ) -> None:
        self._around = around
        super().__init__(routes, lifespan=lifespan)

    @property
    def lifespan_context(self) -> _UserLifespan:
        return functools.partial(self._around, cast("_UserLifespan", self._user_lifespan))

    @lifespan_context.setter
    def lifespan_context(self, value: Lifespan[Any]) -> None:
        self._user_lifespan: Lifespan[Any] = value
