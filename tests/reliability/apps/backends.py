"""Producer-side backends of the Redis backends for the reliability suite's processes.

They match the workers of the conformance harnesses (and of ``celery_workers`` /
``arq_workers`` here): Celery on the broker URL, ARQ in database
``PACIFICPY_TEST_ARQ_DB`` (1 by default) of ``PACIFICPY_TEST_REDIS``.
"""

from __future__ import annotations

import os

from pacificpy.background.backend import BackgroundBackend


def make(name: str, broker: str, *, visibility_timeout: float | None = None) -> BackgroundBackend:
    """The producer backend ``name`` (``celery``, ``arq`` or ``sqlite``) on ``broker``."""
    if name == "celery":
        from pacificpy.background.backend import CeleryBackgroundBackend
        from tests.conformance.celery_app import make_celery_app

        return CeleryBackgroundBackend(celery_app=make_celery_app(broker, visibility_timeout))
    if name == "arq":
        from arq.connections import RedisSettings

        from pacificpy.background.backend import ARQBackgroundBackend

        settings = RedisSettings.from_dsn(broker)
        settings.database = int(os.environ.get("PACIFICPY_TEST_ARQ_DB", "1"))
        return ARQBackgroundBackend(
            redis_settings=settings, in_progress_timeout=1.0, shutdown_timeout=5.0
        )
    if name == "sqlite":
        return make_sqlite()
    raise ValueError(f"unknown backend {name!r}")


def make_sqlite(*, consume: bool = True) -> BackgroundBackend:
    """The SQLite backend on ``PACIFICPY_REL_SQLITE``, with 1 s leases (so a task of a
    killed process runs again within seconds; the default is 30 s)."""
    from pacificpy.background.backend import SQLiteBackgroundBackend

    return SQLiteBackgroundBackend(
        os.environ["PACIFICPY_REL_SQLITE"], 4, consume=consume, lease=1.0, shutdown_timeout=5.0
    )
