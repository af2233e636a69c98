"""What the Redis backends (Celery, ARQ) share at app startup: the broker check, and the
URL shown without its password."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

__all__ = ["STARTUP_PING_TIMEOUT", "check_reachable", "safe_url"]

logger = logging.getLogger("pacificpy.background")

#: Seconds the app's startup waits for the broker to answer a PING before it warns.
STARTUP_PING_TIMEOUT = 2.0


# -- the broker at app startup -------------------------------------------------------------
def safe_url(url: str) -> str:
    """``url`` without its password (the user name stays)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    netloc = f"{parts.username}:***@{netloc}" if parts.username else f":***@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


async def check_reachable(kind: str, url: str, ping: Callable[[], Awaitable[object]]) -> bool:
    """Await ``ping()`` for up to :data:`STARTUP_PING_TIMEOUT` seconds; warn if it fails.

    The app goes on starting either way: enqueues raise ``EnqueueError`` (HTTP 503) until
    the broker answers. Returns whether it answered.
    """
    try:
        await asyncio.wait_for(ping(), STARTUP_PING_TIMEOUT)
    except Exception as exc:
        timed_out = isinstance(exc, (TimeoutError, asyncio.TimeoutError))
        reason = (
            f"no answer within {STARTUP_PING_TIMEOUT:g} s"
            if timed_out
            else f"{type(exc).__name__}: {exc}"
        )
        logger.warning(
            "%s backend: %s is unreachable at startup (%s); the app starts anyway, and "
            "enqueues fail with EnqueueError (HTTP 503) until it answers",
            kind, safe_url(url), reason,
        )  # fmt: skip
        return False
    return True
