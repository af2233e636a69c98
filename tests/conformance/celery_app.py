"""The Celery worker module of the conformance suite: ``celery -A tests.conformance.celery_app
worker``.

Reads the suite's Redis from ``PACIFICPY_TEST_REDIS`` (broker and PacificPy state), and,
for the fault tests, the broker's visibility timeout from
``PACIFICPY_TEST_VISIBILITY_TIMEOUT`` (seconds before an unacknowledged message of a dead
worker is delivered again; kombu's default is one hour).

On RabbitMQ: ``PACIFICPY_TEST_BROKER`` is the broker URL (the Redis one by default), and
the state lives in ``PACIFICPY_TEST_REDIS``, or in PostgreSQL when ``PACIFICPY_TEST_STATE``
is a ``postgresql://`` URL.
"""

from __future__ import annotations

import os

from celery import Celery

from pacificpy.background.backend import CeleryBackgroundBackend
from pacificpy.background.decorators import configure_background_tasks
from tests.conformance import tasks  # noqa: F401  (registers the suite's tasks)
from tests.conformance.harness import SIGNING_KEY


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


def make_backend(celery_app: Celery) -> CeleryBackgroundBackend:
    """The suite's backend: its state where the environment says (see the module doc)."""
    redis_url = os.environ["PACIFICPY_TEST_REDIS"]
    state_url = os.environ.get("PACIFICPY_TEST_STATE", "")
    if state_url.startswith("postgresql://"):
        from pacificpy.background.backends.postgres import PostgresTaskState

        return CeleryBackgroundBackend(celery_app, state=PostgresTaskState(state_url))
    if celery_app.conf.broker_url == redis_url:
        return CeleryBackgroundBackend(celery_app=celery_app)
    return CeleryBackgroundBackend(celery_app, redis_url=redis_url)


_vt = os.environ.get("PACIFICPY_TEST_VISIBILITY_TIMEOUT")
_broker = os.environ.get("PACIFICPY_TEST_BROKER") or os.environ["PACIFICPY_TEST_REDIS"]
celery_app = make_celery_app(_broker, float(_vt) if _vt else None)
backend = make_backend(celery_app)
configure_background_tasks(backend, signing_key=SIGNING_KEY)
