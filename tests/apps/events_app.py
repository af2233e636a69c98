"""The app the task-event tests serve with a real uvicorn: a local executor, a task that
reports progress, and the events route with a token and a fixed secret."""

from __future__ import annotations

import asyncio

from pacificpy import PacificPy
from pacificpy.background import background, current_task, get_handle
from pacificpy.background.decorators import configure_background_tasks
from pacificpy.background.local import get_local_executor
from pacificpy.routing import Request

TOKEN = "events-test-token-0123456789"
SECRET = "events-test-secret-0123456789abcdef"
PATH = "/_tasks/events"

app = PacificPy()
configure_background_tasks(get_local_executor(max_workers=4))
app.include_task_events(token=TOKEN, secret=SECRET)


@background
async def stepper(steps: int, step_seconds: float) -> int:
    ctx = current_task()
    assert ctx is not None
    for i in range(1, steps + 1):
        await asyncio.sleep(step_seconds)
        ctx.set_progress(i, steps, f"step {i}")
    return steps


@app.post("/start")
async def start(request: Request) -> dict[str, str]:
    body = await request.json()
    handle = await stepper.delay(body["steps"], body["step_seconds"])
    return {"task_id": handle.id, "events": handle.events_url(app)}


@app.post("/cancel/{task_id}")
async def cancel(request: Request) -> dict[str, bool]:
    return {"cancelled": await get_handle(request.path_params["task_id"]).cancel()}


@app.get("/status/{task_id}")
async def status(request: Request) -> dict[str, str | None]:
    found = await get_handle(request.path_params["task_id"]).status()
    return {"status": None if found is None else found.value}


@app.get("/streams")
async def streams(request: Request) -> dict[str, int]:
    return {"open": app.state.task_events.open_streams}
