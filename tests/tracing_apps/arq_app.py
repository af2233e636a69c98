"""ARQ worker module of the tracing tests: ``arq tests.tracing_apps.arq_app.WorkerSettings``.

Queue and PacificPy state: the Redis at ``PACIFICPY_TEST_REDIS`` (a database of its own, so
the conformance workers never take these messages). Spans: ``PACIFICPY_TEST_SPAN_FILE``.
"""

from __future__ import annotations

import os

from arq.connections import RedisSettings

from pacificpy.background.backends.arq_backend import ARQBackgroundBackend
from pacificpy.background.decorators import configure_background_tasks
from tests.conformance.harness import SIGNING_KEY
from tests.tracing_apps import tasks  # noqa: F401  (registers the tasks)
from tests.tracing_apps.spans import setup_worker_tracing

setup_worker_tracing()
backend = ARQBackgroundBackend(
    redis_settings=RedisSettings.from_dsn(os.environ["PACIFICPY_TEST_REDIS"]), shutdown_timeout=5.0
)
configure_background_tasks(backend, signing_key=SIGNING_KEY)
WorkerSettings = backend.worker_settings()
