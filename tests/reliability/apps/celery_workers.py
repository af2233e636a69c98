"""Celery worker module of the reliability fault tests:
``celery -A tests.reliability.apps.celery_workers worker``.

The conformance suite's Celery app (``PACIFICPY_TEST_REDIS``, and
``PACIFICPY_TEST_VISIBILITY_TIMEOUT`` for a short broker visibility timeout) plus the
reliability suite's own tasks.
"""

from __future__ import annotations

import tests.reliability.tasks  # noqa: F401  (registers slow_count)
from tests.conformance.celery_app import backend, celery_app

__all__ = ["backend", "celery_app"]
