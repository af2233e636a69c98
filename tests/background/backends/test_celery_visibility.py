"""The broker visibility timeout the Celery backend sets, unless the user set one.

kombu's default (one hour) left a task whose whole worker was SIGKILLed ``running`` for an
hour. PacificPy sets at least ``VISIBILITY_TIMEOUT_FLOOR`` (5 min), and longer when a task's
declared timeout or retry delay needs it, so that no declared task is delivered twice
while it still runs. The recovery time under this default, with real workers, is measured
by ``python -m tests.background.backends.measure_celery_recovery`` (docs/reliability.md);
the fault tests set a short one through the same option.
"""

from __future__ import annotations

import uuid

from celery import Celery

from pacificpy.background import registry
from pacificpy.background.backend import CeleryBackgroundBackend
from pacificpy.background.backends._celery_app import (
    VISIBILITY_TIMEOUT_FLOOR,
    VISIBILITY_TIMEOUT_MARGIN,
    visibility_timeout_for,
)
from pacificpy.background.decorators import background, configure_background_tasks

BROKER = "redis://127.0.0.1:1/0"  # never contacted


def _visibility(app: Celery) -> object:
    return app.conf.broker_transport_options.get("visibility_timeout")


def test_default_is_five_minutes_not_an_hour() -> None:
    assert VISIBILITY_TIMEOUT_FLOOR == 300.0
    app = Celery("vt-default", broker=BROKER, set_as_current=False)
    backend = CeleryBackgroundBackend(celery_app=app)
    try:
        assert _visibility(app) == visibility_timeout_for(registry.all_specs(), 5.0)
        assert VISIBILITY_TIMEOUT_FLOOR <= _visibility(app) < 3600  # type: ignore[operator]
    finally:
        backend.shutdown_sync()


def test_default_covers_the_longest_declared_timeout_and_retry_delay() -> None:
    app = Celery("vt-long", broker=BROKER, set_as_current=False)
    backend = CeleryBackgroundBackend(celery_app=app, time_limit_grace=7.0)
    configure_background_tasks(backend)  # from here on, tasks declared later reach the app
    name = f"vt-long-{uuid.uuid4().hex[:8]}"
    try:

        @background(name=name, timeout=1200)  # declared after the backend: still counted
        def long_task() -> None:
            pass

        assert _visibility(app) == visibility_timeout_for(registry.all_specs(), 7.0)
        assert _visibility(app) >= 1200 + 7.0 + VISIBILITY_TIMEOUT_MARGIN  # type: ignore[operator]

        @background(name=name + "-retry", retries=20, retry_backoff=10, retry_backoff_max=1800)
        def retried() -> None:
            pass

        assert _visibility(app) == visibility_timeout_for(registry.all_specs(), 7.0)
        assert _visibility(app) >= 1800 + VISIBILITY_TIMEOUT_MARGIN  # type: ignore[operator]
    finally:
        registry._tasks.pop(name, None)
        registry._tasks.pop(name + "-retry", None)
        backend.shutdown_sync()


def test_a_visibility_timeout_the_user_set_is_kept() -> None:
    before = Celery("vt-user", broker=BROKER, set_as_current=False)
    before.conf.broker_transport_options = {"visibility_timeout": 42, "socket_timeout": 3}
    after = Celery("vt-user-later", broker=BROKER, set_as_current=False)
    other = Celery("vt-other-options", broker=BROKER, set_as_current=False)
    other.conf.broker_transport_options = {"socket_timeout": 3}
    backends = [CeleryBackgroundBackend(celery_app=a) for a in (before, after, other)]
    name = f"vt-user-{uuid.uuid4().hex[:8]}"
    try:
        assert before.conf.broker_transport_options == {
            "visibility_timeout": 42,
            "socket_timeout": 3,
            "priority_steps": list(range(10)),  # flow control's, beside the user's
        }
        assert other.conf.broker_transport_options["socket_timeout"] == 3  # kept beside ours
        assert other.conf.broker_transport_options["visibility_timeout"] >= 300
        after.conf.broker_transport_options = {"visibility_timeout": 9}  # set after the backend

        @background(name=name, timeout=2000)
        def late() -> None:
            pass

        assert _visibility(before) == 42 and _visibility(after) == 9
    finally:
        registry._tasks.pop(name, None)
        for backend in backends:
            backend.shutdown_sync()
