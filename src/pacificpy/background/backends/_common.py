"""Helpers the Redis backends (Celery, ARQ) share: waiting for a stored outcome, the
monitor record of a requeued dead letter, and the broker check at app startup."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

from pacificpy.background.dead_letter import DeadLetter
from pacificpy.background.monitor import get_task_monitor
from pacificpy.background.task import Outcome, TaskEnvelope

__all__ = [
    "STARTUP_PING_TIMEOUT",
    "check_reachable",
    "poll_outcome",
    "poll_outcome_sync",
    "record_requeue_failed",
    "record_requeued",
    "safe_url",
]

logger = logging.getLogger("pacificpy.background")

#: Seconds the app's startup waits for the broker to answer a PING before it warns.
STARTUP_PING_TIMEOUT = 2.0

_FIRST_PAUSE = 0.005
_MAX_PAUSE = 0.1


def _next_wait(pause: float, deadline: float | None, task_id: str, timeout: float | None) -> float:
    """How long to sleep before the next look; TimeoutError once ``deadline`` has passed."""
    if deadline is None:
        return pause
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"task {task_id} did not finish within {timeout}s")
    return min(pause, left)


async def poll_outcome(
    fetch: Callable[[], Awaitable[Outcome | None]], task_id: str, timeout: float | None
) -> Outcome:
    """Await ``fetch()`` until it gives an outcome: every 5 ms at first, backing off to 100 ms.

    Raises:
        TimeoutError: none within ``timeout`` seconds (None: wait for ever).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = _FIRST_PAUSE
    while True:
        outcome = await fetch()
        if outcome is not None:
            return outcome
        await asyncio.sleep(_next_wait(pause, deadline, task_id, timeout))
        pause = min(pause * 1.5, _MAX_PAUSE)


def poll_outcome_sync(
    fetch: Callable[[], Outcome | None], task_id: str, timeout: float | None
) -> Outcome:
    """Blocking form of :func:`poll_outcome`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = _FIRST_PAUSE
    while True:
        outcome = fetch()
        if outcome is not None:
            return outcome
        time.sleep(_next_wait(pause, deadline, task_id, timeout))
        pause = min(pause * 1.5, _MAX_PAUSE)


# -- a requeued dead letter ----------------------------------------------------------------
def record_requeued(env: TaskEnvelope) -> None:
    """Record the requeued task as ``queued`` (with its argument preview), written now.

    A requeue starts a new life of the task id, so the monitor forgets the old record; the
    new one gets its arguments from this event only. It is written before the message is
    published: a worker's ``running`` event written first would make a late ``queued``
    event stale, and the preview would be lost.
    """
    try:
        monitor = get_task_monitor()
        monitor.task_queued(env)
        monitor.flush()
    except Exception:
        logger.exception("task monitor failed while recording requeued task %s", env.task_id)


def record_requeue_failed(env: TaskEnvelope, letter: DeadLetter) -> None:
    """The requeue did not reach the broker and the letter is back: say ``dead`` again."""
    try:
        get_task_monitor().task_dead(env.task_id, env.task_name, letter.error)
    except Exception:
        logger.exception("task monitor failed while restoring dead task %s", env.task_id)


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
