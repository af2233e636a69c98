"""The tasks of the cross-process tracing tests (imported by the test process and workers)."""

from __future__ import annotations

from pacificpy.background.decorators import background


@background
def traced_add(x: int, y: int) -> int:
    """A leaf task."""
    return x + y


@background
def traced_parent(x: int) -> str:
    """Enqueue ``traced_add`` from inside a task (a chain); return the child's task id."""
    return traced_add.delay(x, 1).id
