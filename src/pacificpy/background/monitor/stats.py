"""``TaskMonitor.stats()``: counts, duration quantiles and throughput from record rows."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from pacificpy.types import TaskStatus

__all__ = ["THROUGHPUT_WINDOW", "compute_stats"]

#: ``stats()`` throughput is the number of tasks finished in this many last seconds / it.
THROUGHPUT_WINDOW = 60.0


def _quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile of sorted ``values``."""
    if not values:
        return None
    idx = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[idx]


def compute_stats(
    rows: Iterable[tuple[str, TaskStatus, float | None, float | None]],
    now: float | None = None,
    window: float = THROUGHPUT_WINDOW,
) -> dict[str, Any]:
    """``stats()`` from ``(name, status, duration, finished_at)`` rows."""
    now = time.time() if now is None else now
    since = now - window
    counts: dict[str, int] = {s.value: 0 for s in TaskStatus}
    per_name: dict[str, dict[str, Any]] = {}
    recent_total = 0
    total = 0
    for name, status, duration, finished_at in rows:
        total += 1
        counts[status.value] += 1
        entry = per_name.get(name)
        if entry is None:
            entry = per_name[name] = {"counts": {}, "durations": [], "recent": 0}
        entry["counts"][status.value] = entry["counts"].get(status.value, 0) + 1
        if duration is not None:
            entry["durations"].append(duration)
        if finished_at is not None and finished_at >= since:
            entry["recent"] += 1
            recent_total += 1
    tasks: dict[str, dict[str, Any]] = {}
    for name in sorted(per_name):
        entry = per_name[name]
        durs = sorted(entry["durations"])
        tasks[name] = {
            "count": sum(entry["counts"].values()),
            "counts": entry["counts"],
            "p50": _quantile(durs, 0.5),
            "p95": _quantile(durs, 0.95),
            "throughput": entry["recent"] / window,
        }
    return {
        "total": total,
        "counts": counts,
        "throughput": recent_total / window,
        "window": window,
        "tasks": tasks,
    }
