"""FastAPI: a Pydantic model for the body and one ``BackgroundTasks`` no-op."""

from __future__ import annotations

from fastapi import BackgroundTasks, FastAPI
from pydantic import BaseModel


class User(BaseModel):
    user_id: int
    email: str


async def noop(user_id: int) -> None:
    """The async no-op task."""


def noop_sync(user_id: int) -> None:
    """The sync no-op task (run in Starlette's thread pool)."""


app = FastAPI()
app_sync = FastAPI()


@app.post("/")
async def create(user: User, background_tasks: BackgroundTasks) -> dict[str, object]:
    background_tasks.add_task(noop, user.user_id)
    return {"ok": True, "user_id": user.user_id}


@app_sync.post("/")
async def create_sync(user: User, background_tasks: BackgroundTasks) -> dict[str, object]:
    background_tasks.add_task(noop_sync, user.user_id)
    return {"ok": True, "user_id": user.user_id}
