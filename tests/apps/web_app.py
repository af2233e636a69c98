"""The app ``tests/test_app_uvicorn.py`` serves with a real uvicorn: one route per behaviour.

When ``PACIFICPY_TEST_EVENTS`` names a file, the startup and shutdown hooks append
``startup`` / ``shutdown`` lines to it.
"""

from __future__ import annotations

import os
from typing import Any

from pacificpy import HTTPException, PacificPy
from pacificpy.routing import Request

MAX_BODY_SIZE = 64 * 1024

app = PacificPy(max_body_size=MAX_BODY_SIZE)


def _record(event: str) -> None:
    path = os.environ.get("PACIFICPY_TEST_EVENTS")
    if path:
        with open(path, "a", encoding="utf-8") as events:
            events.write(event + "\n")


@app.on_startup
async def _started() -> None:
    _record("startup")


@app.on_shutdown
def _stopped() -> None:
    _record("shutdown")


@app.get("/ok")
async def ok(request: Request) -> dict[str, Any]:
    return {"ok": True}


@app.post("/echo")
async def echo(request: Request) -> Any:
    return await request.json()


@app.post("/size")
async def size(request: Request) -> dict[str, int]:
    return {"size": len(await request.body())}


@app.get("/users/{user_id:int}")
async def user(request: Request) -> dict[str, int]:
    return {"user_id": request.path_params["user_id"]}


@app.get("/teapot")
async def teapot(request: Request) -> None:
    raise HTTPException(418, "I'm a teapot")


@app.get("/boom")
async def boom(request: Request) -> None:
    raise RuntimeError("secret internal detail")
