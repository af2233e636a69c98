"""The Celery worker module of the flow-control tests on RabbitMQ with the state in
PostgreSQL: the harness's app, its tasks and the flow tasks, with the short concurrency
lease of ``PACIFICPY_TEST_LEASE``."""

from __future__ import annotations

import os

from tests.conformance import flow_tasks  # noqa: F401  (registers the flow tasks)
from tests.conformance.celery_rabbit_pg_app import backend, celery_app

__all__ = ["backend", "celery_app"]

backend.concurrency_lease = float(os.environ["PACIFICPY_TEST_LEASE"])
