"""The bounded load test: N HTTP requests through a real uvicorn, one task each, all counted.

``PACIFICPY_LOAD_N`` sets N (default 1,000; the figures in docs/reliability.md come from
``PACIFICPY_LOAD_N=10000``). Each request enqueues ``count(key)`` with a key of its own;
afterwards every key must have run: exactly once on the local executor (at-most-once, in
process), at least once on the Redis backends (at-least-once), duplicates counted.

Run alone: ``.venv/bin/pytest -m load tests/reliability``.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time

import httpx
import pytest
import redis

from tests.conformance.harness import Harness
from tests.reliability import _support
from tests.support.uvicorn_server import serve_app

N = int(os.environ.get("PACIFICPY_LOAD_N", "1000"))
CONCURRENCY = int(os.environ.get("PACIFICPY_LOAD_CONCURRENCY", "32"))
APP = "tests.reliability.apps.load_app:app"

pytestmark = [pytest.mark.load, pytest.mark.redis, pytest.mark.timeout(max(180, int(N * 0.08)))]


async def _fire(base_url: str, keys: list[str]) -> tuple[collections.Counter[int], list[str]]:
    statuses: collections.Counter[int] = collections.Counter()
    ids: list[str] = []
    sem = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60.0) as client:

        async def one(key: str) -> None:
            async with sem:
                response = await client.post("/enqueue", json={"key": key})
            statuses[response.status_code] += 1
            if response.status_code == 200:
                ids.append(response.json()["id"])

        await asyncio.gather(*(one(k) for k in keys))
    return statuses, ids


async def test_load_every_task_accounted_for(
    rig: Harness, counter: redis.Redis, rel_redis_url: str
) -> None:
    keys = _support.new_keys(N, f"load-{rig.name}")
    env = {"PACIFICPY_REL_BACKEND": rig.name, "PACIFICPY_TEST_REDIS": rel_redis_url}
    with serve_app(APP, env=env) as (base_url, _proc):
        started = time.perf_counter()
        statuses, ids = await _fire(base_url, keys)
        enqueued_in = time.perf_counter() - started
        tally = await asyncio.to_thread(
            _support.wait_counts, counter, keys, timeout=max(60.0, N * 0.02)
        )
        drained_in = time.perf_counter() - started
    _support.record(
        rig.name,
        "load (HTTP, 1 task per request)",
        tally,
        requests=N,
        concurrency=CONCURRENCY,
        http_seconds=round(enqueued_in, 2),
        total_seconds=round(drained_in, 2),
        requests_per_second=round(N / enqueued_in, 1),
    )
    assert statuses == {200: N}, f"non-200 answers: {dict(statuses)}"
    assert len(set(ids)) == N, "task ids are not unique"
    assert tally.lost == 0, f"{tally.lost} tasks never ran, e.g. {tally.missing}"
    assert tally.completed == N
    if rig.name == "local":
        assert tally.duplicated == 0, "the local executor ran a task twice"
