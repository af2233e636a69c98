"""PacificPy on Celery, as the docs write it: ``celery -A bench.workers.pp_celery worker``."""

from __future__ import annotations

from celery import Celery

from bench.workers import pp_tasks  # noqa: F401  (registers the tasks)
from bench.workers._body import URL
from pacificpy.background.backend import CeleryBackgroundBackend
from pacificpy.background.decorators import configure_background_tasks

app = Celery("bench_pp", broker=URL)
app.conf.broker_connection_retry_on_startup = True
backend = CeleryBackgroundBackend(celery_app=app)
configure_background_tasks(backend)
