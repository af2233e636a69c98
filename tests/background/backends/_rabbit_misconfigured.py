"""The misconfiguration of issue 15, as a worker module: a Celery app on RabbitMQ and no
state store (no ``redis_url=``, no ``state=``). ``celery -A`` this module must refuse to
start. The broker is ``PACIFICPY_TEST_BROKER`` (the machine's RabbitMQ by default)."""

from __future__ import annotations

import os

from celery import Celery

from pacificpy.background.backend import CeleryBackgroundBackend
from pacificpy.background.decorators import configure_background_tasks
from tests.conformance import tasks  # noqa: F401  (registers the suite's tasks)

celery_app = Celery(
    "misconfigured",
    broker=os.environ.get("PACIFICPY_TEST_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
)
backend = CeleryBackgroundBackend(celery_app=celery_app)
configure_background_tasks(backend)
