"""The app module of the SQLite conformance runs: configures the backend on the run's file
(``PACIFICPY_TEST_SQLITE``), as an app would; ``pacificpy worker`` runs its workers."""

from __future__ import annotations

import tests.conformance.tasks  # noqa: F401  (registers the suite's tasks)
from pacificpy.background.decorators import configure_background_tasks
from tests.conformance.harness import SIGNING_KEY
from tests.conformance.harness_sqlite import make_backend

backend = make_backend()
configure_background_tasks(backend, signing_key=SIGNING_KEY)
