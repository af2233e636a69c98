"""PacificPy's own ASGI middleware, outermost in every application's stack.

:class:`ServerErrorMiddleware` turns any unhandled exception into a JSON 500 and keeps
serving; :class:`BodyLimitMiddleware` answers 431 for oversized headers and 413 for an
oversized body. :meth:`pacificpy.PacificPy.build_middleware_stack` installs both, in that
order, around the user's middleware.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Mapping
from typing import Any, cast

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response
from starlette.types import ASGIApp, ExceptionHandler, Message, Receive, Scope, Send

from pacificpy.routing import (
    BODY_LIMIT_SCOPE_KEY,
    body_too_large,
    content_length,
    error_response,
    http_error_response,
    is_async_callable,
)

__all__ = ["BodyLimitMiddleware", "ServerErrorMiddleware"]

# Unhandled exceptions have always been logged as the application's: keep that name, which
# logging configurations refer to.
logger = logging.getLogger("pacificpy.app")


class _ResponseReplaced(Exception):
    """The app started a response for an over-limit body; the 413 went out instead."""


class BodyLimitMiddleware:
    """Answer 431 for headers over ``max_header_size``, 413 for a body over ``max_body_size``.

    The headers' total size (names and values) is checked first: uvicorn's httptools
    server sets no limit of its own. The body limit is Starlette's, answered in JSON: a
    route, mount or router with its own ``max_body_size`` replaces the application's for
    its requests (higher or lower). A ``Content-Length`` over the limit in force is refused
    before a PacificPy handler runs, at the first read of the body, or when the app starts
    a response without reading it; without ``Content-Length`` the body is counted as it is
    read, and the read that passes the limit raises a 413 ``HTTPException``, which the
    exception handlers turn into the JSON error. A scope without ``headers`` counts as one
    with none.
    """

    def __init__(
        self, app: ASGIApp, max_body_size: int | None, max_header_size: int | None = None
    ) -> None:
        self.app = app
        self.max_body_size = max_body_size
        self.max_header_size = max_header_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header_limit = self.max_header_size
        if header_limit is not None:
            size = sum(len(k) + len(v) for k, v in scope.get("headers") or ())
            if size > header_limit:
                response = error_response(
                    431,
                    f"Request header fields are {size} bytes, over the limit of "
                    f"{header_limit} bytes (max_header_size)",
                )
                await response(scope, receive, send)
                return
        outer = scope.get(BODY_LIMIT_SCOPE_KEY)
        if outer is not None:
            # Inside another app (or middleware) that limits bodies: its limit holds, and
            # this app's may only lower it (a route's own max_body_size can raise it).
            limit = self.max_body_size
            if limit is not None and (outer.max_body_size is None or limit < outer.max_body_size):
                outer.max_body_size = limit
                scope[MAX_BODY_SIZE_SCOPE_KEY] = limit
            await self.app(scope, receive, send)
            return
        await _BodyLimitResponder(self.app, self.max_body_size)(scope, receive, send)


class _BodyLimitResponder:
    """One request's body limit: Starlette's responder, answering in JSON."""

    __slots__ = ("app", "content_length", "max_body_size", "response_started", "total_size")

    def __init__(self, app: ASGIApp, max_body_size: int | None) -> None:
        self.app = app
        self.max_body_size = max_body_size  # replaced by a route's or mount's own limit
        self.content_length: int | None = None
        self.total_size = 0
        self.response_started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        length = self.content_length = content_length(scope)

        async def limited_receive() -> Message:
            limit = self.max_body_size
            if limit is not None and length is not None and length > limit:
                raise body_too_large(limit)
            message = await receive()
            if message["type"] == "http.request":
                self.total_size += len(message.get("body", b""))
                limit = self.max_body_size
                if limit is not None and self.total_size > limit:
                    raise body_too_large(limit)
            return message

        async def limited_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.response_started = True
                limit = self.max_body_size
                if limit is not None and length is not None and length > limit:
                    # The app answered without reading the over-limit body.
                    await http_error_response(body_too_large(limit))(scope, receive, send)
                    raise _ResponseReplaced
            await send(message)

        scope[BODY_LIMIT_SCOPE_KEY] = self
        if self.max_body_size is not None:
            scope[MAX_BODY_SIZE_SCOPE_KEY] = self.max_body_size
        try:
            await self.app(scope, limited_receive, limited_send)
        except HTTPException as exc:
            # A read past the limit outside the exception handlers' reach (middleware
            # reading the body, say); any other HTTPException goes on to the error middleware.
            if exc.status_code != 413 or self.response_started:
                raise
            await http_error_response(exc)(scope, receive, send)
        except _ResponseReplaced:
            pass
        finally:
            scope.pop(BODY_LIMIT_SCOPE_KEY, None)


class ServerErrorMiddleware:
    """Turn any unhandled exception into a JSON 500, log it, and keep serving.

    Unlike Starlette's ``ServerErrorMiddleware`` the exception is not re-raised to the
    server once the 500 has been sent: it is logged here, once. The application's
    ``Exception`` (or ``500``) handler is called for every such error, as in Starlette,
    also when the response had already started; then nothing can be sent, so the
    exception goes on to the server, which closes the connection.
    """

    def __init__(
        self, app: ASGIApp, debug: bool = False, handler: ExceptionHandler | None = None
    ) -> None:
        self.app = app
        self.debug = debug
        # Starlette types handlers loosely (request or websocket); this one gets requests.
        self.handler = cast("Callable[[StarletteRequest, Exception], Any] | None", handler)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        response_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except HTTPException as exc:
            # Raised by middleware, outside the exception handlers' reach (the body limit's
            # 413 among them).
            if response_started:
                raise
            await http_error_response(exc)(scope, receive, send)
        except Exception as exc:
            logger.exception("unhandled exception in %s %s", scope.get("method"), scope.get("path"))
            response = await self._response(StarletteRequest(scope), exc)
            if response_started:
                # Nothing more can be sent; the handler has seen the error (to report
                # it, say), and the server closes the connection.
                raise
            await response(scope, receive, send)

    async def _response(self, request: StarletteRequest, exc: Exception) -> Response:
        if self.handler is not None:
            if is_async_callable(self.handler):
                response = await self.handler(request, exc)
            else:
                response = await run_in_threadpool(self.handler, request, exc)
            if isinstance(response, Response):
                return response
        extra: Mapping[str, Any] | None = None
        if self.debug:
            extra = {
                "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            }
        return error_response(500, "Internal Server Error", extra=extra)
