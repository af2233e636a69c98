"""The app module of the SQLite conformance run with worker processes: enqueues only
(``consume=False``); ``pacificpy worker tests.conformance.sqlite_proc_app`` consumes."""

from __future__ import annotations

import os

import tests.conformance.tasks  # noqa: F401  (registers the suite's tasks)
from pacificpy.background.decorators import configure_background_tasks
from pacificpy.background.monitor import configure_task_monitor
from tests.conformance.harness import SIGNING_KEY
from tests.conformance.harness_sqlite_proc import make_backend

backend = make_backend()
configure_background_tasks(backend, signing_key=SIGNING_KEY)
# Shared with a test that configures the same store (progress across processes).
configure_task_monitor(redis_url=os.environ["PACIFICPY_TEST_REDIS"])
