"""Raw Celery: one task, Redis broker, no result backend.

With ``BENCH_CELERY_ATLEASTONCE=1`` it uses the at-least-once settings PacificPy's Celery
backend applies (acks late, reject on worker lost, prefetch multiplier 1), so the two can
be compared with the same worker settings. With ``BENCH_CELERY_RESULTS=1`` as well, it keeps
every task's result in Redis (``result_backend``), as PacificPy keeps every outcome for
``handle.result()``.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from bench.workers._body import URL, body_sync

app = Celery("bench_raw", broker=URL)
app.conf.broker_connection_retry_on_startup = True
if os.environ.get("BENCH_CELERY_ATLEASTONCE") == "1":
    app.conf.task_acks_late = True
    app.conf.task_reject_on_worker_lost = True
    app.conf.worker_prefetch_multiplier = 1
if os.environ.get("BENCH_CELERY_RESULTS") == "1":
    app.conf.result_backend = URL


@app.task(name="bench.raw.job")
def job(payload: dict[str, Any]) -> None:
    """The bench job."""
    body_sync(payload)
