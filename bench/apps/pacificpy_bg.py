"""PacificPy on its local executor (the default backend): one ``.delay()`` per request.

``app`` enqueues an async no-op (run on the serving loop), ``app_sync`` a sync one (run on
the executor's thread pool), both as the guide writes it: ``await task.delay(...)``, on the
default executor with its defaults (``max_queue_size=10_000``). The in-process driver
(bench/asgi_inproc.py) configures a deeper queue of its own before it imports this module.

Each app counts the tasks it enqueued and the ones that ran. When ``BENCH_TASK_COUNT_FILE``
is set, the shutdown hook waits for the executor to go idle and writes both counts there,
so the HTTP scenario can check that no accepted task was lost.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from typing import Any

from pacificpy import PacificPy
from pacificpy.background.decorators import background, get_backend

#: next() of an itertools.count is atomic under the GIL: safe from the executor's threads.
_enqueued = itertools.count()
_ran = itertools.count()


@background(name="bench.http.noop")
async def noop(user_id: int) -> None:
    """The async no-op task."""
    next(_ran)


@background(name="bench.http.noop_sync")
def noop_sync(user_id: int) -> None:
    """The sync no-op task."""
    next(_ran)


app = PacificPy()
app_sync = PacificPy()
app_notask = PacificPy()  # the same route enqueuing nothing: the web layer alone


@app.post("/")
async def create(request: Any) -> dict[str, object]:
    data = await request.json()
    await noop.delay(data["user_id"])
    next(_enqueued)
    return {"ok": True, "user_id": data["user_id"]}


@app_sync.post("/")
async def create_sync(request: Any) -> dict[str, object]:
    data = await request.json()
    await noop_sync.delay(data["user_id"])
    next(_enqueued)
    return {"ok": True, "user_id": data["user_id"]}


@app_notask.post("/")
async def create_notask(request: Any) -> dict[str, object]:
    data = await request.json()
    return {"ok": True, "user_id": data["user_id"]}


async def _report_counts() -> None:
    path = os.environ.get("BENCH_TASK_COUNT_FILE")
    if not path:
        return
    executor: Any = get_backend()
    drained = await asyncio.to_thread(executor.join, 60)
    # One more next() returns how many came before it: read once, at the very end.
    counts = {"enqueued": next(_enqueued), "ran": next(_ran), "drained": drained}
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(counts, fh)


app.on_shutdown(_report_counts)
app_sync.on_shutdown(_report_counts)
