"""The guide's "ARQ (Async-First)" snippet as a user's ``myapp``.

The snippet is copied as written except for the port, which is the test suite's own
redis-server (``ARQ_GUIDE_REDIS_PORT``) instead of 6379. Run with
``arq tests.apps.arq_guide_app.WorkerSettings`` or
``pacificpy worker tests.apps.arq_guide_app --workers 4``.
"""

from __future__ import annotations

import asyncio
import os

from arq.connections import RedisSettings

from pacificpy import PacificPy
from pacificpy.background import current_task
from pacificpy.background.backend import ARQBackgroundBackend
from pacificpy.background.decorators import background, configure_background_tasks

app = PacificPy()

# Configure ARQ
arq_backend = ARQBackgroundBackend(
    redis_settings=RedisSettings(host="localhost", port=int(os.environ["ARQ_GUIDE_REDIS_PORT"]))
)
configure_background_tasks(arq_backend)


@background
def send_email(to: str, subject: str, body: str) -> dict[str, object]:
    ctx = current_task()
    assert ctx is not None
    return {"to": to, "subject": subject, "pid": os.getpid(), "attempt": ctx.attempt}


@background
async def ping(value: int) -> int:
    await asyncio.sleep(0)
    return value


@app.post("/notifications")
async def send_notification(request):  # type: ignore[no-untyped-def]
    data = await request.json()
    handle = await send_email.delay(data["to"], data["subject"], data["body"])
    return {"status": "Email queued", "id": handle.id}


WorkerSettings = arq_backend.worker_settings()
