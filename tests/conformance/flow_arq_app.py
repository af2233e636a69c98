"""The ARQ worker module of the flow-control tests: ``arq
tests.conformance.flow_arq_app.WorkerSettings`` consumes ``PACIFICPY_TEST_FLOW_QUEUE`` with
``PACIFICPY_TEST_FLOW_SLOTS`` jobs at once and the lease of ``PACIFICPY_TEST_LEASE``."""

from __future__ import annotations

import os

from pacificpy.background.backends.arq_backend import ARQBackgroundBackend
from pacificpy.background.decorators import configure_background_tasks
from tests.conformance import flow_tasks  # noqa: F401  (registers the flow tasks)
from tests.conformance.harness import SIGNING_KEY
from tests.conformance.harness_arq import redis_settings

backend = ARQBackgroundBackend(
    redis_settings=redis_settings(),
    shutdown_timeout=5.0,
    max_jobs=int(os.environ["PACIFICPY_TEST_FLOW_SLOTS"]),
)
configure_background_tasks(
    backend, signing_key=SIGNING_KEY, concurrency_lease=float(os.environ["PACIFICPY_TEST_LEASE"])
)
WorkerSettings = backend.worker_settings(queue=os.environ["PACIFICPY_TEST_FLOW_QUEUE"])
