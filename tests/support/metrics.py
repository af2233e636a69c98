"""Read one sample of the task metrics, as a scrape of ``/metrics`` would see it now."""

from __future__ import annotations

__all__ = ["oldest_age", "sample"]


def sample(name: str, labels: dict[str, str]) -> float | None:
    """The value of sample ``name`` with exactly ``labels``, or None if it is absent."""
    from pacificpy.background.metrics import make_registry

    for family in make_registry().collect():
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


def oldest_age(queue: str = "default") -> float | None:
    """``pacificpy_queue_oldest_task_age_seconds`` of ``queue``."""
    return sample("pacificpy_queue_oldest_task_age_seconds", {"queue": queue})
