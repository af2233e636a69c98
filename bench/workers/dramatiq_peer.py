"""Dramatiq: one actor on a RedisBroker."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.workers._body import URL, body_sync

dramatiq.set_broker(RedisBroker(url=URL))


@dramatiq.actor(queue_name="default", max_retries=0)
def job(payload: dict[str, Any]) -> None:
    """The bench job."""
    body_sync(payload)
