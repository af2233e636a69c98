"""Tasks of the flow-control conformance tests (SPEC §10.5), importable by their workers.

Each records its start (and end) in the suite's Redis, under ``pacificpy-test:<run>``, as
JSON ``[start, end, pid, label, task id]``; a held task waits for the flag
``pacificpy-test:<run>:release`` (at most :data:`HOLD_LIMIT` seconds).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from pacificpy.background import current_task
from pacificpy.background.decorators import background
from tests.conformance.tasks import store

HOLD_LIMIT = 120.0


def key(run: str) -> str:
    return f"pacificpy-test:{run}"


def release(run: str) -> None:
    store().set(f"{key(run)}:release", 1, ex=600)


def events(run: str) -> list[list[Any]]:
    """``[start, end, pid, label, task id]`` of each run recorded so far, in record order."""
    return [json.loads(raw) for raw in store().lrange(key(run), 0, -1)]


def _run(run: str, label: str, seconds: float = 0.0, hold: bool = False) -> None:
    start = time.time()
    ctx = current_task()
    if hold:
        store().rpush(f"{key(run)}:started", json.dumps([start, os.getpid()]))
        deadline = time.monotonic() + HOLD_LIMIT
        while not store().exists(f"{key(run)}:release") and time.monotonic() < deadline:
            time.sleep(0.02)
    if seconds:
        time.sleep(seconds)
    entry = [start, time.time(), os.getpid(), label, ctx.id if ctx else None]
    store().rpush(key(run), json.dumps(entry))


@background(concurrency=2)
def two_at_once(run: str, seconds: float) -> None:
    _run(run, "", seconds)


@background(rate_limit="5/s")
def five_per_second(run: str) -> None:
    _run(run, "")


@background
def in_order(run: str, label: str, hold: bool) -> None:
    _run(run, label, hold=hold)


@background(concurrency=1)
def one_at_once(run: str, label: str, hold: bool) -> None:
    _run(run, label, hold=hold)
