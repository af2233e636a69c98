"""The worker module of the Celery-on-RabbitMQ-with-PostgreSQL-state conformance harness.

The broker is ``PACIFICPY_TEST_CELERY_RABBIT_PG_BROKER`` (the harness's own virtual host);
the state lives in PostgreSQL, ``PACIFICPY_TEST_CELERY_RABBIT_PG_STATE`` (the harness's own
database).
"""

from __future__ import annotations

import os

from pacificpy.background.decorators import configure_background_tasks
from pacificpy.background.monitor import configure_task_monitor
from tests.conformance import tasks  # noqa: F401  (registers the suite's tasks)
from tests.conformance._celery_setup import make_backend, make_celery_app
from tests.conformance.harness import SIGNING_KEY

celery_app = make_celery_app(os.environ["PACIFICPY_TEST_CELERY_RABBIT_PG_BROKER"])
backend = make_backend(celery_app, os.environ["PACIFICPY_TEST_CELERY_RABBIT_PG_STATE"])
configure_background_tasks(backend, signing_key=SIGNING_KEY)
# Shared with a test that configures the same store (progress across processes).
configure_task_monitor(redis_url=os.environ["PACIFICPY_TEST_REDIS"])
