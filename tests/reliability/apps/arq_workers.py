"""ARQ worker module of the reliability fault tests: ``arq
tests.reliability.apps.arq_workers.WorkerSettings`` or ``pacificpy worker
tests.reliability.apps.arq_workers``.

The conformance suite's Redis settings (``PACIFICPY_TEST_REDIS``, database
``PACIFICPY_TEST_ARQ_DB``) with a 1 s in-progress lease, so a killed worker's jobs run again
within about a second, plus the reliability suite's own tasks.
"""

from __future__ import annotations

import os

from pacificpy.background.decorators import configure_background_tasks
from tests.conformance import tasks as conformance_tasks
from tests.conformance.harness import SIGNING_KEY
from tests.reliability import tasks as reliability_tasks
from tests.reliability.apps.backends import make

backend = make("arq", os.environ["PACIFICPY_TEST_REDIS"])
configure_background_tasks(backend, signing_key=SIGNING_KEY)
WorkerSettings = backend.worker_settings()

# Imported to register their tasks in the worker.
__all__ = ["WorkerSettings", "backend", "conformance_tasks", "reliability_tasks"]
