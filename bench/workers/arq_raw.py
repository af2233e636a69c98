"""Raw arq: one job function, arq's defaults (``WorkerSettings``) and a tuned poll delay
(``WorkerSettingsTuned``, ``BENCH_ARQ_POLL`` seconds, the PacificPy backend's default)."""

from __future__ import annotations

import os
from typing import Any

from arq.connections import RedisSettings

from bench.workers._body import URL, body_async


async def job(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    """The bench job (arq passes its context first)."""
    await body_async(payload, ctx["redis"])


class WorkerSettings:
    """arq's defaults: max_jobs=10, poll_delay=0.5 s."""

    functions = [job]
    redis_settings = RedisSettings.from_dsn(URL)


class WorkerSettingsTuned:
    """The same with a short poll delay (arq reads only the class's own attributes)."""

    functions = [job]
    redis_settings = RedisSettings.from_dsn(URL)
    poll_delay = float(os.environ["BENCH_ARQ_POLL"])  # set by bench/redis_queues.py, always
