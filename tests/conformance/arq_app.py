"""The ARQ worker module of the conformance suite.

Run as ``arq tests.conformance.arq_app.WorkerSettings`` or
``pacificpy worker tests.conformance.arq_app``. The suite's Redis URL comes from
``PACIFICPY_TEST_REDIS``; the ARQ keys go to the database in ``PACIFICPY_TEST_ARQ_DB``
(so ARQ's own queue is not shared with other tests of the session).
"""

from __future__ import annotations

import os

import tests.conformance.tasks  # noqa: F401  (registers the suite's tasks)
from pacificpy.background.decorators import configure_background_tasks
from pacificpy.background.monitor import configure_task_monitor
from tests.conformance.harness import SIGNING_KEY
from tests.conformance.harness_arq import make_backend

backend = make_backend()
configure_background_tasks(backend, signing_key=SIGNING_KEY)
# Shared with a test that configures the same store (progress across processes).
configure_task_monitor(redis_url=os.environ["PACIFICPY_TEST_REDIS"])
WorkerSettings = backend.worker_settings()
