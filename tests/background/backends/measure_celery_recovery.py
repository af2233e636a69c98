"""Measure how long a Celery task takes to run again after its whole worker was SIGKILLed.

Run by hand (about 5 to 7 minutes under the default visibility timeout)::

    python -m tests.background.backends.measure_celery_recovery

It starts a redis-server of its own and a ``celery worker`` (prefork, concurrency 1) on
``tests.background.backends._recovery_app`` (PacificPy's defaults), enqueues a 2 s task,
SIGKILLs the worker's whole process group while the task runs, starts a second worker at
once (as a process manager restarting it would), and prints the seconds from the kill to
the task's result. ``--visibility-timeout N`` sets the broker option the documented way
instead (as ``test_celery_faults.py`` does with a 1 s one). Expect a figure between the
visibility timeout and 100 s more: kombu looks for expired messages when a worker starts
and then every 100 s.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import time

from tests.conformance.harness_celery import CeleryWorker
from tests.support.redis_server import RedisServer

APP = "tests.background.backends._recovery_app"


@dataclasses.dataclass
class Recovery:
    """What one run measured."""

    visibility_timeout: float
    seconds: float  # from the SIGKILL to the task's stored result
    result: object


def measure(redis_url: str, visibility_timeout: float | None = None) -> Recovery:
    """Kill a worker mid-task on ``redis_url`` and time the task's recovery.

    The test process is the producer: it imports the app module, so ``redis_url`` goes to
    ``PACIFICPY_TEST_REDIS`` of this process too.
    """
    os.environ["PACIFICPY_TEST_REDIS"] = redis_url
    if visibility_timeout is None:
        os.environ.pop("PACIFICPY_TEST_VISIBILITY_TIMEOUT", None)
    else:
        os.environ["PACIFICPY_TEST_VISIBILITY_TIMEOUT"] = str(visibility_timeout)
    import importlib

    app = importlib.import_module(APP)
    app = importlib.reload(app)  # this run's URL and visibility timeout
    effective = float(app.celery_app.conf.broker_transport_options["visibility_timeout"])
    first = CeleryWorker(redis_url, concurrency=1, app=APP)
    second = CeleryWorker(redis_url, concurrency=1, app=APP)
    if visibility_timeout is not None:
        for worker in (first, second):
            worker.env["PACIFICPY_TEST_VISIBILITY_TIMEOUT"] = str(visibility_timeout)
    try:
        first.start()
        first.wait_ready()
        handle = app.hold.delay(2.0)
        first.wait_for_log(f"[{handle.id}] received")
        first.signal(signal.SIGKILL, group=True)  # the main process and its pool
        killed_at = time.monotonic()
        first.wait(10)
        second.start()
        result = handle.result_sync(timeout=effective + 300)
        return Recovery(effective, time.monotonic() - killed_at, result)
    finally:
        first.close()
        second.close()
        app.backend.shutdown_sync()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visibility-timeout", type=float, default=None)
    args = parser.parse_args(argv)
    with RedisServer() as server:
        run = measure(server.url, args.visibility_timeout)
    print(
        f"visibility_timeout={run.visibility_timeout:g} s: the task ran again "
        f"{run.seconds:.1f} s after its worker was SIGKILLed (result {run.result!r})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
