"""Live task events over Server-Sent Events: ``app.include_task_events(path, token)``.

``GET path/{task_id}`` is a ``text/event-stream`` of that task: a ``task`` event whenever
its status or progress changes, as JSON::

    event: task
    data: {"id": "...", "status": "running", "done": 3.0, "total": 10.0, "message": "..."}

and a last ``end`` event (same JSON) once the status is final (``completed``, ``failed``,
``dead``, ``abandoned``, ``cancelled``), after which the server closes the stream. A
comment line is sent every 15 s of silence, so proxies keep the connection open.

**Access.** A request gets in with either

* ``Authorization: Bearer <token>`` (when a ``token`` is configured): any task; for
  servers and scripts, as browsers' ``EventSource`` cannot send headers;
* a signed URL from ``handle.events_url(app)``: ``?expires=<unix time>&signature=<hex>``,
  an HMAC-SHA256 of the task id and the expiry under the app's events secret. It opens
  that one task's stream until it expires: what a page gives one user for their own task.

Without either: 401. A wrong token, an expired, altered or other task's signature: 403.
Without a ``token``, only signed URLs open streams.

**The secret** signing URLs is, in order: ``include_task_events(secret=...)``; the
``PACIFICPY_SECRET_KEY`` environment variable; one derived from ``token``; else a random
one made at startup, which only this process can check (a warning says so: give every
server process of the app the same secret).

**How it streams.** Starlette's ``StreamingResponse`` is enough: SSE is lines of text, and
the response listens for ``http.disconnect`` while it streams and ends the generator when
the client goes away, so no new dependency is needed (``sse-starlette`` would add a ping
and the same disconnect handling). Each open stream reads the task's state (the backend's
stored outcome, else the monitor record; progress from the monitor) every
``poll_interval`` seconds, off the event loop, and sends only changes. The worker never
knows a stream exists: it writes to the monitor as always, so a slow or stalled client
delays nobody but itself, and a disconnect ends the generator and its reads.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson
from starlette.exceptions import HTTPException
from starlette.responses import StreamingResponse
from starlette.routing import BaseRoute

from pacificpy.background import get_backend
from pacificpy.background.monitor import get_task_monitor
from pacificpy.errors import ConfigurationError
from pacificpy.routing import Route
from pacificpy.web.auth import checked_token, presented_token

if TYPE_CHECKING:
    from starlette.requests import Request

    from pacificpy.app import PacificPy

__all__ = ["TaskEvents", "mount_task_events", "task_events_routes"]

logger = logging.getLogger("pacificpy.web.events")

SECRET_ENV = "PACIFICPY_SECRET_KEY"
#: Seconds of silence after which a comment line keeps the connection open.
KEEPALIVE = 15.0
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",  # nginx: pass events on at once
    "X-Content-Type-Options": "nosniff",
}


def _secret(secret: str | bytes | None, token: str | None) -> tuple[bytes, bool]:
    """The signing secret and whether every process can share it (see the module doc)."""
    if secret is None:
        secret = os.environ.get(SECRET_ENV) or None
    if secret is not None:
        raw = secret.encode() if isinstance(secret, str) else bytes(secret)
        if len(raw) < 16:
            raise ConfigurationError(
                "include_task_events(secret=...) must be at least 16 bytes: a short secret "
                "lets anyone forge signed event URLs"
            )
        return raw, True
    if token is not None:
        return hmac.new(token.encode(), b"pacificpy task events", hashlib.sha256).digest(), True
    return secrets.token_bytes(32), False


class TaskEvents:
    """The task-event routes of one app: signs and checks URLs, counts open streams.

    ``app.state.task_events`` holds it (what ``handle.events_url(app)`` uses).
    """

    def __init__(
        self,
        path: str = "/_tasks/events",
        token: str | None = None,
        secret: str | bytes | None = None,
        *,
        poll_interval: float = 0.25,
    ) -> None:
        self.token = checked_token(token, where="include_task_events")
        self.base = "/" + path.strip("/") if path.strip("/") else ""
        self._secret, shared = _secret(secret, self.token)
        if not shared:
            logger.warning(
                "include_task_events: no secret given (secret=..., %s or token=...): signed "
                "event URLs are checked with a random secret of this process only, so another "
                "server process of the app refuses them",
                SECRET_ENV,
            )
        if poll_interval <= 0:
            raise ConfigurationError("poll_interval must be a positive number of seconds")
        self.poll_interval = poll_interval
        #: Streams open now (they end when the task ends or the client goes).
        self.open_streams = 0

    # -- signed URLs -----------------------------------------------------------------------
    def signature(self, task_id: str, expires: int) -> str:
        message = f"{task_id}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def signed_url(self, task_id: str, *, expires_in: float = 3600.0) -> str:
        """The path of ``task_id``'s stream, signed for it alone, valid ``expires_in`` s."""
        if expires_in <= 0:
            raise ValueError("expires_in must be a positive number of seconds")
        expires = int(time.time() + expires_in)
        sig = self.signature(task_id, expires)
        return f"{self.base}/{quote(task_id, safe='')}?expires={expires}&signature={sig}"

    def check(self, request: Request, task_id: str) -> None:
        """Let the request in with the token or a valid signature for ``task_id``.

        Raises:
            HTTPException: 401 with neither; 403 wrong token, bad or expired signature.
        """
        given = presented_token(request)
        if given is not None:
            if self.token is not None and hmac.compare_digest(
                given.encode("latin-1", "replace"), self.token.encode()
            ):
                return
            raise HTTPException(403, "Wrong token")
        query = request.query_params
        signature, expires = query.get("signature"), query.get("expires")
        if signature is None and expires is None:
            raise HTTPException(
                401,
                "This stream needs a token (Authorization: Bearer) or a signed URL "
                "(handle.events_url(app))",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not signature or not expires or not expires.isdigit():
            raise HTTPException(403, "Bad signed URL")
        good = self.signature(task_id, int(expires))
        if not hmac.compare_digest(signature.encode("latin-1", "replace"), good.encode()):
            raise HTTPException(403, "Bad signed URL: it is not for this task")
        if int(expires) < time.time():
            raise HTTPException(403, "Signed URL expired")

    # -- the stream ------------------------------------------------------------------------
    async def stream(self, task_id: str) -> AsyncIterator[bytes]:
        """The event stream of ``task_id`` until its status is final or the client leaves."""
        self.open_streams += 1
        try:
            yield b"retry: 2000\n\n"
            last: dict[str, Any] | None = None
            quiet_since = time.monotonic()
            while True:
                state = await asyncio.to_thread(_task_state, task_id)
                final = state["final"]
                del state["final"]
                if state != last:
                    last = state
                    name = b"end" if final else b"task"
                    yield b"event: " + name + b"\ndata: " + orjson.dumps(state) + b"\n\n"
                    quiet_since = time.monotonic()
                    if final:
                        return
                elif time.monotonic() - quiet_since >= KEEPALIVE:
                    yield b": keep-alive\n\n"
                    quiet_since = time.monotonic()
                await asyncio.sleep(self.poll_interval)
        finally:
            self.open_streams -= 1

    def routes(self) -> list[BaseRoute]:
        async def events(request: Request) -> StreamingResponse:
            task_id = request.path_params["task_id"]
            self.check(request, task_id)
            return StreamingResponse(
                self.stream(task_id), media_type="text/event-stream", headers=_HEADERS
            )

        return [Route(self.base + "/{task_id}", events, methods=["GET"], include_in_schema=False)]


def _task_state(task_id: str) -> dict[str, Any]:
    """What the stream tells of ``task_id`` now: its status (stored outcome first, else the
    monitor) and its latest progress (the monitor)."""
    status = get_backend().get_status_sync(task_id)
    try:
        rec = get_task_monitor().get(task_id)
    except Exception:
        rec = None
    done = total = message = None
    if rec is not None:
        done, total, message = rec.progress_done, rec.progress_total, rec.progress_message
    if status is not None and status.value == "completed" and total is not None:
        done = total  # it finished: the bar is full, whatever the last report said
    return {
        "id": task_id,
        "status": None if status is None else status.value,
        "done": done,
        "total": total,
        "message": message,
        "final": status is not None and status.is_final,
    }


def task_events_routes(
    path: str = "/_tasks/events", token: str | None = None, secret: str | bytes | None = None
) -> list[BaseRoute]:
    """The task-event stream route under ``path``, as a Starlette route list."""
    return TaskEvents(path, token, secret).routes()


def mount_task_events(
    app: PacificPy,
    path: str = "/_tasks/events",
    token: str | None = None,
    secret: str | bytes | None = None,
) -> TaskEvents:
    """Add the task-event stream to ``app`` and keep its signer in ``app.state.task_events``.

    Raises:
        ConfigurationError: ``token`` is empty or blank, or ``secret`` shorter than 16
            bytes.
    """
    events = TaskEvents(path, token, secret)
    app.state.task_events = events
    app.router.routes.extend(events.routes())
    return events
