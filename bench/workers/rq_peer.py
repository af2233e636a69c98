"""RQ: one job function (the worker imports it by its dotted path)."""

from __future__ import annotations

from typing import Any

from bench.workers._body import body_sync


def job(payload: dict[str, Any]) -> None:
    """The bench job."""
    body_sync(payload)
