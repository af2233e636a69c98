"""Testing helpers: a lifespan-running ``TestClient``, eager tasks and captured tasks.

``TestClient`` is Starlette's, so ``with TestClient(app) as client:`` runs the app's
lifespan (the background backend starts, and drains when the block ends).

``eager_tasks()`` makes every ``.delay()`` run its task inline, through the same
execution path the real backends use (call-site checks, monitor events, retries, dead
letters), so ``handle.result_sync()`` has the answer at once::

    with eager_tasks():
        handle = send_email.delay("a@example.com", "Hi", "...")
        assert handle.result_sync() is None

Both helpers swap in a fresh in-memory task monitor for their block and give the
previous one back after, so a test needs no Redis even when the app configures
``configure_task_monitor(redis_url=...)``.

``capture_tasks()`` records what would have been enqueued instead of running it::

    with capture_tasks() as captured:
        client.post("/notifications", json={...})
    captured.assert_enqueued(send_email, "a@example.com", "Hi", "...")
    captured.run_all()          # now run them, inline
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 and warns when its TestClient falls back to httpx;
    # the client works the same, so the warning is noise for PacificPy's users.
    warnings.filterwarnings(
        "ignore", message="Using `httpx` with", category=StarletteDeprecationWarning
    )
    from starlette.testclient import TestClient as _StarletteTestClient

from pacificpy.background.backends.memory import (
    CapturedTask,
    CapturingBackend,
    EagerBackend,
    _InlineBackend,
)
from pacificpy.background.config import configured_backend, swap_backend
from pacificpy.background.monitor import swap_task_monitor

__all__ = [
    "CapturedTask",
    "CapturingBackend",
    "EagerBackend",
    "TestClient",
    "capture_tasks",
    "eager_tasks",
]


class TestClient(_StarletteTestClient):
    """Starlette's test client for a PacificPy app.

    Used as ``with TestClient(app) as client:`` it runs the app's lifespan: startup hooks
    and the background backend's startup on entry, shutdown hooks and the backend's drain
    (within the app's ``shutdown_timeout``) on exit. Without ``with``, no lifespan runs
    and the local executor starts on first use, as in a plain script.
    """

    __test__ = False  # not a pytest test class, despite the name


@contextlib.contextmanager
def eager_tasks(
    *, propagate: bool = False, allow_pickle: bool | None = None
) -> Iterator[EagerBackend]:
    """Run every task inline at ``.delay()`` inside the block; restore the backend after.

    Args:
        propagate: raise a task's final failure (``TaskFailed``) at ``.delay()``.
        allow_pickle: accept ``serializer="pickle"`` tasks; ``None`` follows the backend
            configured before the block (refused if none).

    Yields:
        The :class:`EagerBackend`, for its dead letters and results.
    """
    backend = EagerBackend(propagate=propagate)
    with _installed(backend, allow_pickle):
        yield backend


@contextlib.contextmanager
def capture_tasks(*, allow_pickle: bool | None = None) -> Iterator[CapturingBackend]:
    """Capture every enqueued task inside the block instead of running it.

    Yields:
        The :class:`CapturingBackend`: ``.enqueued``, ``assert_enqueued(task, *args,
        **kwargs)``, ``run_all()``.
    """
    backend = CapturingBackend()
    with _installed(backend, allow_pickle):
        yield backend


@contextlib.contextmanager
def _installed(backend: _InlineBackend, allow_pickle: bool | None) -> Iterator[None]:
    previous = configured_backend()
    backend.adopt(previous)
    if allow_pickle is not None:
        backend.allow_pickle = allow_pickle
    elif previous is not None:
        backend.allow_pickle = previous.allow_pickle
    swap_backend(backend)
    # A fresh in-memory monitor for the block: an app configured for the Redis monitor
    # store is tested without Redis, and its own monitor is given back untouched after.
    previous_monitor = swap_task_monitor(backend.monitor)
    try:
        yield
    finally:
        borrowed = swap_task_monitor(previous_monitor)
        if borrowed is not backend.monitor and borrowed is not None:
            borrowed.close()  # configured inside the block: it ends with the block
        swap_backend(previous)
