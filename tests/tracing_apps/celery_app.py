"""Celery worker module of the tracing tests: ``celery -A tests.tracing_apps.celery_app worker``.

Broker and PacificPy state: the Redis at ``PACIFICPY_TEST_REDIS`` (a database of its own, so
the conformance workers never take these messages). Spans: ``PACIFICPY_TEST_SPAN_FILE``.
"""

from __future__ import annotations

import os

from celery import Celery

from pacificpy.background.backend import CeleryBackgroundBackend
from pacificpy.background.decorators import configure_background_tasks
from tests.conformance.harness import SIGNING_KEY
from tests.tracing_apps import tasks  # noqa: F401  (registers the tasks)
from tests.tracing_apps.spans import setup_worker_tracing

setup_worker_tracing()
celery_app = Celery("pacificpy-tracing", broker=os.environ["PACIFICPY_TEST_REDIS"])
celery_app.conf.update(worker_hijack_root_logger=False, worker_redirect_stdouts=False)
backend = CeleryBackgroundBackend(celery_app=celery_app)
configure_background_tasks(backend, signing_key=SIGNING_KEY)
