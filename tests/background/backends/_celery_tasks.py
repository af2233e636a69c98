"""Tasks of the Celery fault tests only, loaded into their worker with
``celery worker --include tests.background.backends._celery_tasks``."""

from __future__ import annotations

import time

from celery.exceptions import SoftTimeLimitExceeded

from pacificpy.background.decorators import background
from tests.conformance.tasks import store

#: Redis key a test reads to know the soft limit reached the task.
SOFT_LIMIT_SEEN = "pacificpy-test:soft-limit-seen:{key}"


@background(timeout=0.3)
def ignore_soft_limit(key: str) -> str:
    """Catch the soft time limit and keep going: only the hard limit can end this."""
    try:
        time.sleep(30)
    except SoftTimeLimitExceeded:
        store().set(SOFT_LIMIT_SEEN.format(key=key), 1)
        time.sleep(30)
    return "finished"
