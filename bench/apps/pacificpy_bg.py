"""PacificPy on its local executor (the default backend): one ``.delay()`` per request.

``app`` enqueues an async no-op (run on the serving loop), ``app_sync`` a sync one (run on
the executor's thread pool), both as the guide writes it: ``await task.delay(...)``.
"""

from __future__ import annotations

from typing import Any

from pacificpy import PacificPy
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import get_local_executor

# The in-process driver (bench/asgi_inproc.py) can outrun the worker threads by far more
# than 10,000 sync tasks; a deeper queue keeps QueueFull (the default backpressure) out of
# a throughput figure. Starlette's BackgroundTasks has no queue at all.
configure_background_tasks(get_local_executor(max_queue_size=1_000_000))


@background(name="bench.http.noop")
async def noop(user_id: int) -> None:
    """The async no-op task."""


@background(name="bench.http.noop_sync")
def noop_sync(user_id: int) -> None:
    """The sync no-op task."""


app = PacificPy()
app_sync = PacificPy()


@app.post("/")
async def create(request: Any) -> dict[str, object]:
    data = await request.json()
    await noop.delay(data["user_id"])
    return {"ok": True, "user_id": data["user_id"]}


@app_sync.post("/")
async def create_sync(request: Any) -> dict[str, object]:
    data = await request.json()
    await noop_sync.delay(data["user_id"])
    return {"ok": True, "user_id": data["user_id"]}
