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
from pacificpy.background.decorators import background, get_backend
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
def blocking_until_released(n: int) -> None:
    """Hold a worker thread until the test creates ``release`` (or 60 s pass)."""
    _marker(f"block-{n}.started").touch()
    deadline = time.monotonic() + 60
    while not _marker("release").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    _marker(f"block-{n}.done").touch()


@app.post("/disconnect/{name}")
async def enqueue_then_linger(request: Request) -> dict[str, Any]:
    name = request.path_params["name"]
    await slow_sync_marker.delay(name + "-sync", 0.5)
    await slow_async_marker.delay(name + "-async", 0.5)
    await asyncio.sleep(3)  # the client hangs up meanwhile
    return {"ok": True}


@app.post("/block/{n:int}")
async def block(request: Request) -> dict[str, Any]:
    for i in range(request.path_params["n"]):
        await blocking_until_released.delay(i)
    return {"queued": request.path_params["n"], "workers": get_backend().max_workers}


@app.get("/ok")
async def ok(request: Request) -> dict[str, Any]:
    return {"ok": True}


@app.get("/ok-sync")
def ok_sync(request: Request) -> dict[str, Any]:
    return {"ok": True}
