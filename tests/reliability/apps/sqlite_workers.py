"""The module that SQLite worker processes of the reliability suite import: the backend
on ``PACIFICPY_REL_SQLITE`` (enqueue only; ``serve`` consumes) and every task they run."""

from __future__ import annotations

import tests.conformance.tasks
import tests.reliability.tasks  # noqa: F401  (gated_count)
from pacificpy.background.decorators import configure_background_tasks
from tests.conformance.harness import SIGNING_KEY
from tests.reliability.apps.backends import make_sqlite

backend = make_sqlite(consume=False)
configure_background_tasks(backend, signing_key=SIGNING_KEY)
