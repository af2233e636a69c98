"""App served for real by ``app.run()`` and ``pacificpy run`` (tests/test_app_uvicorn.py,
tests/cli/test_run.py): one route enqueues a task, one reads it back by id.

Tasks and the shutdown hook leave files in the directory named by ``PACIFICPY_TEST_DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pacificpy import HTTPException, PacificPy
from pacificpy.background.decorators import background
from pacificpy.background.monitor import get_task_monitor
from pacificpy.routing import Request

app = PacificPy()


def _marker(name: str) -> Path:
    return Path(os.environ["PACIFICPY_TEST_DIR"]) / name


@background
def double(n: int) -> int:
    _marker(f"ran-{n}").write_text(str(n * 2))
    return n * 2


@app.on_shutdown
def _stopped() -> None:
    _marker("shutdown").touch()


@app.post("/tasks")
async def enqueue(request: Request) -> dict[str, Any]:
    handle = await double.delay((await request.json())["n"])
    return {"id": handle.id}


@app.get("/tasks/{task_id}")
async def read(request: Request) -> dict[str, Any]:
    record = get_task_monitor().get(request.path_params["task_id"])
    if record is None:
        raise HTTPException(404, "no such task")
    return {"status": record.status.value, "result": record.result_preview}
