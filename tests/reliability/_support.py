"""Helpers of the reliability suite: a persistent redis-server, counting, result recording.

Every batch test sends tasks of ``tests.conformance.tasks.count`` with a unique key each, so
the worker that runs one does ``INCR pacificpy-test:<key>``; reading the keys back says, per
task, how many times it ran: 0 is lost, 1 is exactly once, more is a duplicate. Workers of
every backend import that module already, so no worker needs anything of this package.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import redis

from tests.support.redis_server import RedisServer

COUNT_PREFIX = "pacificpy-test:"

#: Where the figures go: ``PACIFICPY_RELIABILITY_JSON`` if set, else a temp file.
RESULTS_PATH = Path(
    os.environ.get("PACIFICPY_RELIABILITY_JSON")
    or Path(tempfile.gettempdir()) / "pacificpy-reliability.json"
)

_results: dict[str, dict[str, Any]] = {}


def persistent_redis_server() -> RedisServer:
    """A private redis-server with an append-only file (fsync always).

    Production Redis behind a task queue runs with persistence; with it a stop and restart
    keeps what was queued, so a test can tell the framework's losses from the server's.
    Loading the append-only file happens before PING answers, so a restarted one is ready.
    """
    return RedisServer(persistent=True)


def new_keys(n: int, label: str) -> list[str]:
    """``n`` unique count keys for one batch."""
    run = uuid.uuid4().hex[:10]
    return [f"rel-{label}-{run}-{i}" for i in range(n)]


@dataclasses.dataclass
class Tally:
    """How a batch ended: per task, how many times it ran."""

    sent: int
    completed: int
    duplicated: int
    lost: int
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    missing: list[str] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        del d["missing"], d["extra"]
        return {**d, **self.extra}


def read_counts(client: redis.Redis, keys: Sequence[str]) -> list[int]:
    """How many times each key's task ran (0 if never)."""
    out: list[int] = []
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        values = client.mget([COUNT_PREFIX + k for k in chunk])
        out.extend(int(v) if v is not None else 0 for v in values)
    return out


def wait_counts(
    client: redis.Redis,
    keys: Sequence[str],
    *,
    timeout: float,
    excused: Callable[[], Iterable[str]] | None = None,
) -> Tally:
    """Poll until every key ran at least once (or is ``excused``); then tally.

    ``excused`` returns keys accounted for otherwise (marked abandoned, say); they are
    not waited for, and counted as not lost.
    """
    deadline = time.monotonic() + timeout
    while True:
        counts = read_counts(client, keys)
        excuse = set(excused()) if excused is not None else set()
        missing = [k for k, c in zip(keys, counts, strict=True) if c == 0 and k not in excuse]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    completed = sum(1 for c in counts if c >= 1)
    return Tally(
        sent=len(keys),
        completed=completed,
        duplicated=sum(c - 1 for c in counts if c > 1),
        lost=len(missing),
        missing=missing[:20],
    )


def record(backend: str, scenario: str, tally: Tally, **extra: Any) -> None:
    """Keep one row of the table of docs/reliability.md and write the JSON file.

    Rows of earlier runs in the same file are kept, so running one backend at a time by
    hand fills the table.
    """
    row = {"backend": backend, "scenario": scenario, **tally.as_dict(), **extra}
    row["recorded_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _results[f"{backend}/{scenario}"] = row
    existing: dict[str, Any] = {}
    try:
        existing = json.loads(RESULTS_PATH.read_text())
    except (OSError, ValueError):
        existing = {}
    existing.update(_results)
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")


def recorded() -> dict[str, dict[str, Any]]:
    """Rows recorded by this process."""
    return dict(_results)
