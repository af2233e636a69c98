"""Tasks of the reliability suite that only the local executor runs (in this process or in
the uvicorn app); worker processes of the Redis backends use ``tests.conformance.tasks``."""

from __future__ import annotations

import time
from typing import Any

from pacificpy.background.decorators import background
from tests.conformance import tasks


@background
def slow_count(key: str, seconds: float) -> int:
    """Sleep, then ``INCR`` the counter of ``key``: a slow task whose runs can be counted."""
    time.sleep(seconds)
    return int(tasks.store().incr(f"pacificpy-test:{key}"))


@background
def gated_count(key: str, gate: str) -> int:
    """Note the start, wait while ``gate`` exists, then ``INCR`` the counter of ``key``."""
    client = tasks.store()
    client.incr(f"pacificpy-test:started:{gate}")
    while client.exists(f"pacificpy-test:{gate}"):
        time.sleep(0.02)
    return int(client.incr(f"pacificpy-test:{key}"))


@background
def takes_secrets(user: str, password: str, **extra: Any) -> str:
    """A task whose arguments carry secrets (for the redaction tests)."""
    return user
