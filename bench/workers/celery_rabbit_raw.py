"""Raw Celery on RabbitMQ (``BENCH_RABBIT_URL``), with the settings PacificPy's backend
applies there: acks late, reject on worker lost, prefetch multiplier 1, publisher confirms.
No result backend, unless ``BENCH_CELERY_RESULTS=1``: then results go to Redis
(``BENCH_REDIS_URL``), as PacificPy's outcomes do. The job counts itself in
``BENCH_REDIS_URL``."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from bench.workers._body import body_sync

app = Celery("bench_rabbit_raw", broker=os.environ.get("BENCH_RABBIT_URL", "amqp://"))
app.conf.update(
    broker_connection_retry_on_startup=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_transport_options={"confirm_publish": True},
)
if os.environ.get("BENCH_CELERY_RESULTS") == "1":
    app.conf.result_backend = os.environ.get("BENCH_REDIS_URL")


@app.task(name="bench.rabbit.raw.job")
def job(payload: dict[str, Any]) -> None:
    """The bench job."""
    body_sync(payload)
