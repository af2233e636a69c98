"""Redis pieces the Redis backends (Celery, ARQ) share: the :class:`RedisTaskState`,
its clients and the key names."""

from __future__ import annotations

from pacificpy.background.backends.redis.state import RedisTaskState

__all__ = ["RedisTaskState"]
