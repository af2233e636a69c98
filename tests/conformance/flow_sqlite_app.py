"""The SQLite worker module of the flow-control tests: ``pacificpy worker
tests.conformance.flow_sqlite_app -Q <queue>`` runs the flow tasks from the sqlite_proc
run's file with ``PACIFICPY_TEST_FLOW_SLOTS`` threads per process, no rows leased ahead
(so a priority decides which task a freed slot takes), and the concurrency lease of
``PACIFICPY_TEST_LEASE``."""

from __future__ import annotations

import os

from pacificpy.background.backend import SQLiteBackgroundBackend
from pacificpy.background.decorators import configure_background_tasks
from tests.conformance import flow_tasks  # noqa: F401  (registers the flow tasks)
from tests.conformance.harness import SIGNING_KEY
from tests.conformance.harness_sqlite_proc import PATH_VARIABLE

backend = SQLiteBackgroundBackend(
    os.environ[PATH_VARIABLE],
    int(os.environ["PACIFICPY_TEST_FLOW_SLOTS"]),
    prefetch=0,
    lease=5.0,
    shutdown_timeout=5.0,
)
configure_background_tasks(
    backend, signing_key=SIGNING_KEY, concurrency_lease=float(os.environ["PACIFICPY_TEST_LEASE"])
)
