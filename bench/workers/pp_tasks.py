"""PacificPy's bench tasks: ``job`` (sync, for Celery) and ``ajob`` (async, for ARQ)."""

from __future__ import annotations

from typing import Any

from bench.workers._body import body_async, body_sync
from pacificpy.background.decorators import background


@background(name="bench.pp.job")
def job(payload: dict[str, Any]) -> None:
    """The bench job, sync."""
    body_sync(payload)


@background(name="bench.pp.ajob")
async def ajob(payload: dict[str, Any]) -> None:
    """The bench job, async."""
    await body_async(payload)
