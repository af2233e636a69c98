"""The guide's Celery (Production) snippet in an app module, as a user writes it.

The Celery fault and guide tests copy this file to ``myapp.py`` and run
``celery -A myapp worker --concurrency=10`` beside it. The broker URL is the guide's,
unless ``PACIFICPY_GUIDE_BROKER`` points at the test suite's own Redis.
"""

from __future__ import annotations

import os

import redis
from celery import Celery

from pacificpy import PacificPy
from pacificpy.background.backend import CeleryBackgroundBackend
from pacificpy.background.decorators import background, configure_background_tasks

app = PacificPy()

# Configure Celery
celery_app = Celery(
    "myapp", broker=os.environ.get("PACIFICPY_GUIDE_BROKER", "redis://localhost:6379/0")
)
celery_backend = CeleryBackgroundBackend(celery_app=celery_app)
configure_background_tasks(celery_backend)


@background
def send_email(to: str, subject: str, body: str):
    # Email sending logic (here: leave a trace the test can see)
    outbox = redis.Redis.from_url(celery_app.conf.broker_url)
    outbox.set(f"guide-outbox:{to}", f"{subject}|{body}")


@app.post("/notifications")
async def send_notification(request):
    data = await request.json()
    await send_email.delay(data["to"], data["subject"], data["body"])
    return {"status": "Email queued"}
