"""The Celery worker module of the conformance suite: ``celery -A tests.conformance.celery_app
worker``.

Reads the suite's Redis from ``PACIFICPY_TEST_REDIS`` (broker and PacificPy state), and,
for the fault tests, the broker's visibility timeout from
``PACIFICPY_TEST_VISIBILITY_TIMEOUT`` (seconds before an unacknowledged message of a dead
worker is delivered again; kombu's default is one hour).

On RabbitMQ: ``PACIFICPY_TEST_BROKER`` is the broker URL (the Redis one by default), and
the state lives in ``PACIFICPY_TEST_REDIS``, or in PostgreSQL when ``PACIFICPY_TEST_STATE``
is a ``postgresql://`` URL.
"""

from __future__ import annotations

import os

from pacificpy.background.decorators import configure_background_tasks
from pacificpy.background.monitor import configure_task_monitor
from tests.conformance import tasks  # noqa: F401  (registers the suite's tasks)
from tests.conformance._celery_setup import make_backend, make_celery_app
from tests.conformance.harness import SIGNING_KEY

_vt = os.environ.get("PACIFICPY_TEST_VISIBILITY_TIMEOUT")
_broker = os.environ.get("PACIFICPY_TEST_BROKER") or os.environ["PACIFICPY_TEST_REDIS"]
celery_app = make_celery_app(_broker, float(_vt) if _vt else None)
backend = make_backend(celery_app)
configure_background_tasks(backend, signing_key=SIGNING_KEY)
# Shared with a test that configures the same store (progress across processes).
configure_task_monitor(redis_url=os.environ["PACIFICPY_TEST_REDIS"])
