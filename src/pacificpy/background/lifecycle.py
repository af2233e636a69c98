"""Start and stop the configured backend from an application's lifespan."""

from __future__ import annotations

from pacificpy.background.decorators import get_backend

__all__ = ["app_shutdown", "app_startup"]


async def app_startup() -> None:
    """Start the configured background backend on the serving loop."""
    await get_backend().startup()


async def app_shutdown() -> None:
    """Stop taking tasks and drain the configured backend within its shutdown timeout."""
    await get_backend().shutdown()
