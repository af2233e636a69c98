"""App for tests/background/test_traps.py, served by a real uvicorn.

Tasks leave marker files in the directory named by ``PACIFICPY_TEST_DIR``.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from pacificpy import PacificPy
from pacificpy.background.decorators import background
from pacificpy.routing import Request

app = PacificPy(shutdown_timeout=10)


def _marker(name: str) -> Path:
    return Path(os.environ["PACIFICPY_TEST_DIR"]) / name


@background
def slow_sync_marker(name: str, seconds: float) -> str:
    _marker(name + ".started").touch()
    time.sleep(seconds)
    _marker(name).write_text("done")
    return name


@background
async def slow_async_marker(name: str, seconds: float) -> str:
    await asyncio.sleep(seconds)
    _marker(name).write_text("done")
    return name


@background
def blocking(seconds: float) -> None:
    time.sleep(seconds)


@app.post("/disconnect/{name}")
async def enqueue_then_linger(request: Request) -> dict[str, Any]:
    name = request.path_params["name"]
    await slow_sync_marker.delay(name + "-sync", 0.5)
    await slow_async_marker.delay(name + "-async", 0.5)
    await asyncio.sleep(3)  # the client hangs up meanwhile
    return {"ok": True}


@app.post("/block/{n:int}")
async def block(request: Request) -> dict[str, Any]:
    for _ in range(request.path_params["n"]):
        await blocking.delay(2.0)
    return {"queued": request.path_params["n"]}


@app.get("/ok")
async def ok(request: Request) -> dict[str, Any]:
    return {"ok": True}


@app.get("/ok-sync")
def ok_sync(request: Request) -> dict[str, Any]:
    return {"ok": True}
