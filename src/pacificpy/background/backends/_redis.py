"""Old home of the Redis task state; it lives in :mod:`.redis.state` now."""

from __future__ import annotations

from pacificpy.background.backends.redis.state import MAX_DEAD_LETTERS, RedisState, RedisTaskState

__all__ = ["MAX_DEAD_LETTERS", "RedisState", "RedisTaskState"]
