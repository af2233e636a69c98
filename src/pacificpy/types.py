"""Shared aliases and enums."""

from __future__ import annotations

import enum
from typing import Any

__all__ = ["JSON", "TaskStatus"]

JSON = Any


class TaskStatus(str, enum.Enum):
    """Where a task is in its life: ``queued → running → completed | failed | ...``."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    DEAD = "dead"
    ABANDONED = "abandoned"
    #: Stopped by ``handle.cancel()``: final, not a failure, never dead-lettered.
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def is_final(self) -> bool:
        """True for states a task never leaves on its own."""
        return self in _FINAL

    @classmethod
    def parse(cls, value: TaskStatus | str) -> TaskStatus:
        """Normalise a user-supplied status (any case) to the enum."""
        if isinstance(value, TaskStatus):
            return value
        try:
            return cls(value.lower())
        except ValueError:
            names = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown task status {value!r}; expected one of {names}") from None


_FINAL = frozenset(
    {
        TaskStatus.COMPLETED,
        TaskStatus.FAILED,
        TaskStatus.DEAD,
        TaskStatus.ABANDONED,
        TaskStatus.CANCELLED,
    }
)
