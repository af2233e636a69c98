"""PacificPy on ARQ, as the docs write it: ``arq bench.workers.pp_arq.WorkerSettings``."""

from __future__ import annotations

import os

from arq.connections import RedisSettings

from bench.workers import pp_tasks  # noqa: F401  (registers the tasks)
from bench.workers._body import URL
from pacificpy.background.backend import ARQBackgroundBackend
from pacificpy.background.decorators import configure_background_tasks

# BENCH_PP_ARQ_POLL overrides the backend's poll delay, for side checks only.
_poll = os.environ.get("BENCH_PP_ARQ_POLL")
backend = ARQBackgroundBackend(
    redis_settings=RedisSettings.from_dsn(URL), **({"poll_delay": float(_poll)} if _poll else {})
)
configure_background_tasks(backend)
WorkerSettings = backend.worker_settings()
