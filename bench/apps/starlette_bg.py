"""Starlette: Route + ``request.json()`` + ``JSONResponse`` with one ``BackgroundTasks`` no-op."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.background import BackgroundTasks
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def noop(user_id: int) -> None:
    """The async no-op task."""


def noop_sync(user_id: int) -> None:
    """The sync no-op task (Starlette runs it in its thread pool)."""


async def create(request: Request) -> JSONResponse:
    data = await request.json()
    tasks = BackgroundTasks()
    tasks.add_task(noop, data["user_id"])
    return JSONResponse({"ok": True, "user_id": data["user_id"]}, background=tasks)


async def create_sync(request: Request) -> JSONResponse:
    data = await request.json()
    tasks = BackgroundTasks()
    tasks.add_task(noop_sync, data["user_id"])
    return JSONResponse({"ok": True, "user_id": data["user_id"]}, background=tasks)


app = Starlette(routes=[Route("/", create, methods=["POST"])])
app_sync = Starlette(routes=[Route("/", create_sync, methods=["POST"])])
