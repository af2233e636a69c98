"""The app the browser test serves with a real uvicorn: the task dashboard over a local
executor, with one task that completes and one that fails until it is healed.

The dashboard token is ``PACIFICPY_DASHBOARD_TOKEN`` (a fixed test value by default).
"""

from __future__ import annotations

import os
from typing import Any

from pacificpy import PacificPy
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import get_local_executor
from pacificpy.background.monitor import configure_task_monitor
from pacificpy.routing import Request

TOKEN = os.environ.get("PACIFICPY_DASHBOARD_TOKEN", "browser-test-token-42")

app = PacificPy()
configure_background_tasks(get_local_executor(max_workers=2))
configure_task_monitor()
app.include_task_dashboard(token=TOKEN)
app.include_task_dashboard(path="/_open_tasks")  # no token: read-only, for the first paint
app.include_metrics(token=TOKEN)

_state = {"broken": True}


@background
def send_welcome_email(user_id: int, subject: str) -> dict[str, Any]:
    return {"status": "sent", "user_id": user_id}


@background
def charge_card(order_id: int, card_token: str) -> dict[str, Any]:
    if _state["broken"]:
        raise ConnectionError("payment gateway unreachable")
    return {"status": "charged", "order_id": order_id}


if os.environ.get("PACIFICPY_DASHBOARD_SCHEDULE"):  # served by the browser test only: a
    # schedule declared in the test process itself would start a scheduler in every later
    # test's app

    @background(schedule="0 3 1 1 *", schedule_tz="Europe/Paris")  # listed; never due
    def yearly_report() -> None:
        return None


@app.post("/welcome")
async def welcome(request: Request) -> dict[str, str]:
    handle = await send_welcome_email.delay(7, subject="Welcome aboard")
    return {"task_id": handle.id}


@app.post("/charge")
async def charge(request: Request) -> dict[str, str]:
    handle = await charge_card.delay(1001, card_token="tok_live_SECRET")
    return {"task_id": handle.id}


@app.post("/heal")
async def heal(request: Request) -> dict[str, bool]:
    _state["broken"] = False
    return {"broken": False}


@background
def nightly_export(day: str) -> dict[str, Any]:
    return {"status": "exported", "day": day}


@app.post("/export-later")
async def export_later(request: Request) -> dict[str, str]:
    handle = await nightly_export.apply_async(args=("2026-11-30",), countdown=600)
    return {"task_id": handle.id}
