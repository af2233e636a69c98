"""Tasks of the conformance suite: importable by worker processes of every backend.

Side effects that must be seen across processes go to the suite's Redis, whose URL is in
``PACIFICPY_TEST_REDIS`` (set by the harness in the test process and in the workers).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import os
import time
import uuid
from decimal import Decimal
from typing import Any

import pydantic
import redis

from pacificpy.background import Retry, current_task
from pacificpy.background.decorators import background

_clients: dict[str, redis.Redis] = {}


def store() -> redis.Redis:
    """A Redis client for the suite's server (one per process)."""
    url = os.environ["PACIFICPY_TEST_REDIS"]
    client = _clients.get(url)
    if client is None:
        client = _clients[url] = redis.Redis.from_url(url)
    return client


def _context() -> dict[str, Any]:
    ctx = current_task()
    assert ctx is not None
    return {
        "id": ctx.id,
        "name": ctx.name,
        "attempt": ctx.attempt,
        "queue": ctx.queue,
        "enqueued_at": ctx.enqueued_at,
        "parent_id": ctx.parent_id,
        "started_at": time.time(),
        "pid": os.getpid(),
    }


@background
def add(a: int, b: int) -> int:
    return a + b


@background
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


@background
def echo(value: Any) -> Any:
    return value


@background
def raise_cancelled(message: str) -> None:
    raise asyncio.CancelledError(message)


@background
async def async_raise_cancelled(message: str) -> None:
    raise asyncio.CancelledError(message)


@background
def unusual_result() -> dict[str, Any]:
    """A value JSON cannot carry as it is: an int key, a set, bytes, an exception."""
    return {"keys": {1: "a"}, "set": {1, 2}, "bytes": b"ok", "exc": ValueError("v")}


@background
def circular_result() -> dict[str, Any]:
    """A value JSON cannot write at all: a list that holds itself."""
    loop: list[Any] = [1]
    loop.append(loop)
    return {"ok": True, "loop": loop}


@background
def context() -> dict[str, Any]:
    return _context()


@background
async def async_context() -> dict[str, Any]:
    return _context()


@background
def count(key: str) -> int:
    """INCR ``key``: how many times this ran."""
    return int(store().incr(f"pacificpy-test:{key}"))


@background
def fail_always(message: str) -> None:
    raise ValueError(message)


@background(retries=1, retry_backoff=0.01, retry_jitter=False)
def fail_twice_total(message: str) -> None:
    raise ValueError(message)


@background(retries=3, retry_backoff=0.01, retry_jitter=False)
def flaky(fail_times: int) -> dict[str, Any]:
    ctx = _context()
    if ctx["attempt"] <= fail_times:
        raise ConnectionError(f"attempt {ctx['attempt']} fails on purpose")
    return ctx


@background(retries=2, retry_backoff=0.01, retry_on=(ConnectionError,))
def fail_not_retried() -> None:
    raise KeyError("not in retry_on")


@background(retries=2)
def ask_retry(times: int) -> int:
    ctx = current_task()
    assert ctx is not None
    if ctx.attempt <= times:
        raise Retry(countdown=0.01)
    return ctx.attempt


@background(timeout=0.5)
async def slow_async(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "finished"


@background(timeout=0.5)
def slow_sync(seconds: float) -> str:
    time.sleep(seconds)
    return "finished"


@background
def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@background
def fail_unless_flag(flag: str) -> str:
    if not store().exists(f"pacificpy-test:{flag}"):
        raise RuntimeError(f"flag {flag} is not set")
    return "ok"


@background
def chain_child(x: int) -> dict[str, Any]:
    return {"x": x, **_context()}


@background
def chain_parent(x: int) -> str:
    """A sync task that enqueues the next step without await (the guide's chaining)."""
    handle = chain_child.delay(x + 1)
    return handle.id


@background
async def async_chain_parent(x: int) -> str:
    handle = await chain_child.delay(x + 1)
    return handle.id


@background(serializer="pickle")
def pickled(value: Any) -> Any:
    return value


@background
def raise_timeout_error(message: str) -> None:
    """A timeout of the task's own (a socket read, say), with no ``timeout=`` set."""
    raise TimeoutError(message)


@background
async def async_raise_timeout_error(message: str) -> None:
    await asyncio.sleep(0)
    raise TimeoutError(message)


@background(timeout=5.0)
async def async_raise_timeout_error_within_limit(message: str) -> None:
    """Its own ``TimeoutError``, well inside a ``timeout=`` of its own."""
    await asyncio.sleep(0)
    raise TimeoutError(message)


@background(timeout=0.3, retries=2, retry_backoff=0.01, retry_jitter=False)
def slow_sync_retried(seconds: float) -> str:
    """Counts its runs, then overruns its timeout (Celery: the soft time limit ends it)."""
    ctx = current_task()
    assert ctx is not None
    store().incr(f"pacificpy-test:attempts:{ctx.id}")
    time.sleep(seconds)
    return "finished"


@background(timeout=5.0)
def raise_timeout_error_within_limit(message: str) -> None:
    raise TimeoutError(message)


# -- typed arguments (SPEC §10.1) ---------------------------------------------------------
class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: float


class Order(pydantic.BaseModel):
    placed: dt.date
    lines: list[Decimal]


def _seen(**values: Any) -> dict[str, list[str]]:
    """What the task received: each argument's type name and repr."""
    return {name: [type(v).__name__, repr(v)] for name, v in values.items()}


@background
def typed_args(
    when: dt.datetime,
    ident: uuid.UUID,
    amount: Decimal,
    color: Color,
    point: Point,
    *,
    day: dt.date | None = None,
    ids: list[uuid.UUID] | None = None,
    pair: tuple[int, str] | None = None,
    order: Order | None = None,
) -> dict[str, list[str]]:
    return _seen(
        when=when, ident=ident, amount=amount, color=color, point=point,
        day=day, ids=ids, pair=pair, order=order,
    )  # fmt: skip


@background
async def async_typed_args(
    when: dt.datetime, ident: uuid.UUID, amount: Decimal, color: Color, point: Point
) -> dict[str, list[str]]:
    await asyncio.sleep(0)
    return _seen(when=when, ident=ident, amount=amount, color=color, point=point)


# -- cancellation and progress (SPEC §10.4) ------------------------------------------------
def _mark(what: str) -> None:
    """Set ``pacificpy-test:<what>:<task id>`` (seen by the test process)."""
    ctx = current_task()
    assert ctx is not None
    store().set(f"pacificpy-test:{what}:{ctx.id}", time.time(), ex=600)


@background
async def async_until_cancelled(seconds: float) -> str:
    """Marks ``started``, then waits; marks ``cancel-seen`` when ``CancelledError`` comes."""
    _mark("started")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        _mark("cancel-seen")
        raise
    return "finished"


@background
def sync_until_cancelled(seconds: float) -> str:
    """Marks ``started``, then polls ``current_task().cancelled``; marks ``cancel-seen``."""
    _mark("started")
    ctx = current_task()
    assert ctx is not None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ctx.cancelled:
            _mark("cancel-seen")
            return "stopped"
        time.sleep(0.01)
    return "finished"


@background(retries=2, retry_backoff=1.5, retry_jitter=False)
def count_then_fail(key: str) -> None:
    """INCR ``key``, then fail (retried after 1.5 s)."""
    store().incr(f"pacificpy-test:{key}")
    raise ConnectionError("fails on purpose, to wait for a retry")


@background
def report_progress(steps: int) -> int:
    """Reports ``i`` of ``steps`` for each step, then waits for the flag ``release:<id>``."""
    ctx = current_task()
    assert ctx is not None
    for i in range(1, steps + 1):
        ctx.set_progress(i, steps, f"step {i}")
    _mark("reported")
    deadline = time.monotonic() + 60
    while not store().exists(f"pacificpy-test:release:{ctx.id}"):
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return steps


@background
def sync_ignoring_cancel(seconds: float) -> str:
    """Marks ``started`` with its pid, then sleeps, never looking at ``cancelled``."""
    ctx = current_task()
    assert ctx is not None
    store().set(f"pacificpy-test:pid:{ctx.id}", os.getpid(), ex=600)
    _mark("started")
    time.sleep(seconds)
    return "finished"
