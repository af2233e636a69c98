"""Start and stop the configured backend from an application's lifespan."""

from __future__ import annotations

from pacificpy.background.decorators import get_backend
from pacificpy.background.scheduler import start_scheduler, stop_scheduler

__all__ = ["app_shutdown", "app_startup"]


async def app_startup() -> None:
    """Start the configured background backend on the serving loop, then this process's
    scheduler of periodic tasks (if any task has a schedule)."""
    backend = get_backend()
    await backend.startup()
    start_scheduler(backend)


async def app_shutdown(timeout: float | None = None) -> None:
    """Stop taking tasks and drain the configured backend.

    Args:
        timeout: seconds to wait for queued and running tasks; ``None`` uses the backend's
            own ``shutdown_timeout`` (30 s unless it was built with another). Tasks still
            unfinished when it runs out are logged and marked ``abandoned``.
    """
    stop_scheduler()
    backend = get_backend()
    if timeout is None:
        await backend.shutdown()
        return
    # The contract's shutdown() reads self.shutdown_timeout, so every backend honours an
    # override this way without a second signature.
    previous = backend.shutdown_timeout
    backend.shutdown_timeout = timeout
    try:
        await backend.shutdown()
    finally:
        backend.shutdown_timeout = previous
