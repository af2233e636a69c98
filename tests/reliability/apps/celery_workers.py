"""Celery worker module of the reliability fault tests:
``celery -A tests.reliability.apps.celery_workers worker``.

The broker is ``PACIFICPY_REL_BROKER`` (a redis-server the test stops and restarts), with
the visibility timeout of ``PACIFICPY_TEST_VISIBILITY_TIMEOUT``; the tasks' counters stay
in ``PACIFICPY_TEST_REDIS``, a Redis that stays up, so an outage of the broker is not
mistaken for a task's own failure.
"""

from __future__ import annotations

import os

from pacificpy.background.decorators import configure_background_tasks
from tests.conformance import tasks as conformance_tasks
from tests.conformance.harness import SIGNING_KEY
from tests.reliability import tasks as reliability_tasks
from tests.reliability.apps.backends import make

_vt = os.environ.get("PACIFICPY_TEST_VISIBILITY_TIMEOUT")
backend = make(
    "celery", os.environ["PACIFICPY_REL_BROKER"], visibility_timeout=float(_vt) if _vt else None
)
configure_background_tasks(backend, signing_key=SIGNING_KEY)
celery_app = backend.celery_app

# Imported to register their tasks in the worker.
__all__ = ["backend", "celery_app", "conformance_tasks", "reliability_tasks"]
