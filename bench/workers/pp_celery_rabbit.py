"""PacificPy on Celery on RabbitMQ (``BENCH_RABBIT_URL``), as docs/celery.md writes it: the
state in Redis (``redis_url=``, the bench's ``BENCH_REDIS_URL``), every other setting the
backend's default."""

from __future__ import annotations

import os

from celery import Celery

from bench.workers import pp_tasks  # noqa: F401  (registers the tasks)
from bench.workers._body import URL
from pacificpy.background.backend import CeleryBackgroundBackend
from pacificpy.background.decorators import configure_background_tasks

app = Celery("bench_pp_rabbit", broker=os.environ.get("BENCH_RABBIT_URL", "amqp://"))
app.conf.broker_connection_retry_on_startup = True
backend = CeleryBackgroundBackend(celery_app=app, redis_url=URL)
configure_background_tasks(backend)
