"""The Celery app and backend of the suite's Celery worker modules (``celery_app``,
``celery_rabbit_app``): broker and state from the environment."""

from __future__ import annotations

import os

from celery import Celery

from pacificpy.background.backend import CeleryBackgroundBackend


def make_celery_app(redis_url: str, visibility_timeout: float | None = None) -> Celery:
    """The suite's Celery app on ``redis_url``."""
    celery_app = Celery("pacificpy-conformance", broker=redis_url)
    options = {}
    if visibility_timeout is not None:
        options["visibility_timeout"] = visibility_timeout
    celery_app.conf.update(
        broker_transport_options=options,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )
    return celery_app


def make_backend(celery_app: Celery, state_url: str | None = None) -> CeleryBackgroundBackend:
    """The suite's backend: its state in PostgreSQL when ``state_url`` (by default
    ``PACIFICPY_TEST_STATE``) is a ``postgresql://`` URL, else in ``PACIFICPY_TEST_REDIS``
    (the broker's Redis, or ``redis_url=`` on another broker)."""
    redis_url = os.environ["PACIFICPY_TEST_REDIS"]
    if state_url is None:
        state_url = os.environ.get("PACIFICPY_TEST_STATE", "")
    if state_url.startswith("postgresql://"):
        from pacificpy.background.backends.postgres import PostgresTaskState

        return CeleryBackgroundBackend(celery_app, state=PostgresTaskState(state_url))
    if celery_app.conf.broker_url == redis_url:
        return CeleryBackgroundBackend(celery_app=celery_app)
    return CeleryBackgroundBackend(celery_app, redis_url=redis_url)
