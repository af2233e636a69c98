"""PacificPy's own ASGI middleware, outermost in every application's stack.

:class:`ServerErrorMiddleware` turns any unhandled exception into a JSON 500 and keeps
serving; :class:`BodyLimitMiddleware` answers 431 for oversized headers and 413 for an
oversized body. :meth:`pacificpy.PacificPy.build_middleware_stack` installs both, in that
order, around the user's middleware.
"""

from __future__ import annotations

import inspect
import logging
import traceback
from collections.abc import Callable, Mapping
from typing import Any, cast

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response
from starlette.types import ASGIApp, ExceptionHandler, Message, Receive, Scope, Send

from pacificpy.routing import error_response, http_error_response

__all__ = ["BodyLimitMiddleware", "ServerErrorMiddleware"]

# Unhandled exceptions have always been logged as the application's: keep that name, which
# logging configurations refer to.
logger = logging.getLogger("pacificpy.app")


class _BodyTooLarge(HTTPException):
    def __init__(self, max_body_size: int) -> None:
        super().__init__(
            413, f"Request body is larger than the limit of {max_body_size} bytes (max_body_size)"
        )


class BodyLimitMiddleware:
    """Answer 431 for headers over ``max_header_size``, 413 for a body over ``max_body_size``.

    The headers' total size (names and values) is checked first: uvicorn's httptools
    server sets no limit of its own. A ``Content-Length`` over the body limit is refused
    before the application runs. Otherwise the body is counted as the application reads
    it; the read that passes the limit raises a 413 ``HTTPException``, which the exception
    handlers turn into the JSON error.
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
            size = sum(len(k) + len(v) for k, v in scope["headers"])
            if size > header_limit:
                response = error_response(
                    431,
                    f"Request header fields are {size} bytes, over the limit of "
                    f"{header_limit} bytes (max_header_size)",
                )
                await response(scope, receive, send)
                return
        limit = self.max_body_size
        if limit is None:
            await self.app(scope, receive, send)
            return

        content_length = Headers(scope=scope).get("content-length")
        if content_length is not None and content_length.isdigit() and int(content_length) > limit:
            await http_error_response(_BodyTooLarge(limit))(scope, receive, send)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit)
            return message

        # A read past the limit outside any route (by middleware reading the body, say)
        # raises _BodyTooLarge, an HTTPException, which propagates: ServerErrorMiddleware,
        # always outside this one, answers it with the JSON 413.
        await self.app(scope, limited_receive, send)


class ServerErrorMiddleware:
    """Turn any unhandled exception into a JSON 500, log it, and keep serving.

    Unlike Starlette's ``ServerErrorMiddleware`` the exception is not re-raised to the
    server once the 500 has been sent: it is logged here, once. If the response had
    already started, nothing can be sent, so the exception goes on to the server, which
    closes the connection.
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
            if response_started:
                raise
            response = await self._response(StarletteRequest(scope), exc)
            await response(scope, receive, send)

    async def _response(self, request: StarletteRequest, exc: Exception) -> Response:
        if self.handler is not None:
            if inspect.iscoroutinefunction(self.handler):
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
