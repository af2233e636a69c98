"""ARQ worker module of the reliability fault tests: ``arq
tests.reliability.apps.arq_workers.WorkerSettings`` or ``pacificpy worker
tests.reliability.apps.arq_workers``.

ARQ on ``PACIFICPY_REL_BROKER`` (database ``PACIFICPY_TEST_ARQ_DB``), a redis-server the
test stops and restarts, with a 1 s in-progress lease, so a killed worker's jobs run again
within about a second. The tasks' counters stay in ``PACIFICPY_TEST_REDIS``, a Redis that
stays up.
"""

from __future__ import annotations

import os

from pacificpy.background.decorators import configure_background_tasks
from tests.conformance import tasks as conformance_tasks
from tests.conformance.harness import SIGNING_KEY
from tests.reliability import tasks as reliability_tasks
from tests.reliability.apps.backends import make

backend = make("arq", os.environ["PACIFICPY_REL_BROKER"])
configure_background_tasks(backend, signing_key=SIGNING_KEY)
WorkerSettings = backend.worker_settings()

# Imported to register their tasks in the worker.
__all__ = ["WorkerSettings", "backend", "conformance_tasks", "reliability_tasks"]
