"""A Celery app with PacificPy's documented defaults, for measuring how long a task whose
whole worker was SIGKILLed takes to run again (``measure_celery_recovery``).

Broker: ``PACIFICPY_TEST_REDIS``. The broker's visibility timeout is PacificPy's default
unless ``PACIFICPY_TEST_VISIBILITY_TIMEOUT`` is set, in which case it is set the documented
way: ``celery_app.conf.broker_transport_options = {"visibility_timeout": ...}``.
"""

from __future__ import annotations

import os
import time

from celery import Celery

from pacificpy.background.backend import CeleryBackgroundBackend
from pacificpy.background.decorators import background, configure_background_tasks

celery_app = Celery("pacificpy-recovery", broker=os.environ["PACIFICPY_TEST_REDIS"])
_vt = os.environ.get("PACIFICPY_TEST_VISIBILITY_TIMEOUT")
if _vt:
    celery_app.conf.broker_transport_options = {"visibility_timeout": float(_vt)}
backend = CeleryBackgroundBackend(celery_app=celery_app)
configure_background_tasks(backend)


@background(name="recovery.hold")
def hold(seconds: float) -> float:
    """Sleep ``seconds`` (no ``timeout=``: the floor of the default visibility timeout)."""
    time.sleep(seconds)
    return seconds
