"""The app module of the SQLite conformance run with worker processes: enqueues only
(``consume=False``); ``pacificpy worker tests.conformance.sqlite_proc_app`` consumes."""

from __future__ import annotations

import tests.conformance.tasks  # noqa: F401  (registers the suite's tasks)
from pacificpy.background.decorators import configure_background_tasks
from tests.conformance.harness import SIGNING_KEY
from tests.conformance.harness_sqlite_proc import make_backend

backend = make_backend()
configure_background_tasks(backend, signing_key=SIGNING_KEY)
