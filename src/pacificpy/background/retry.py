"""``RetryPolicy``: which failures are retried, and after how long."""

from __future__ import annotations

import dataclasses
import random

from pacificpy.errors import Retry

__all__ = ["RetryPolicy"]


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with optional full jitter.

    Attempt ``n`` (1-based) that fails is followed by attempt ``n + 1`` after
    ``min(backoff_max, backoff * 2 ** (n - 1))`` seconds, or a uniform draw from
    ``[0, that]`` with jitter, while ``n <= retries``.
    """

    retries: int = 0
    backoff: float = 1.0
    backoff_max: float = 600.0
    jitter: bool = True
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError("retries must be >= 0")
        if self.backoff < 0 or self.backoff_max < 0:
            raise ValueError("retry_backoff and retry_backoff_max must be >= 0")

    @property
    def max_attempts(self) -> int:
        """Attempts in all: the first run plus ``retries``."""
        return self.retries + 1

    def should_retry(self, exc: BaseException, attempt: int) -> bool:
        """Whether the failure ``exc`` of ``attempt`` earns another attempt."""
        if attempt > self.retries:
            return False
        return isinstance(exc, (Retry, *self.retry_on))

    def delay(self, attempt: int, exc: BaseException | None = None) -> float:
        """Seconds to wait after failed ``attempt``; a ``Retry(countdown=...)`` wins."""
        if isinstance(exc, Retry) and exc.countdown is not None:
            return max(0.0, float(exc.countdown))
        base = min(self.backoff_max, self.backoff * 2 ** (attempt - 1))
        return random.uniform(0.0, base) if self.jitter else base
