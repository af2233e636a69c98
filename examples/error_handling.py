"""Graceful error handling (guide: "Error Handling / Graceful Error Handling").

A failing task is logged with its traceback and recorded in the monitor; its caller
sees ``TaskFailed`` from ``result()``; other tasks are not affected.

    python examples/error_handling.py
"""

from __future__ import annotations

import logging

from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import get_local_executor
from pacificpy.background.monitor import get_task_monitor
from pacificpy.errors import TaskFailed

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

local_executor = get_local_executor(max_workers=4)
configure_background_tasks(local_executor)

errors: list[tuple[dict, str]] = []


def process_data(data: dict) -> int:
    return 100 // data["divisor"]


def store_error(data: dict, message: str) -> None:
    errors.append((data, message))


# -- the guide's task ------------------------------------------------------------------------
logger = logging.getLogger(__name__)


@background
def robust_task(data: dict):
    try:
        result = process_data(data)
        return result
    except Exception as e:
        logger.error(f"Task failed: {e}", exc_info=True)
        # Store error for debugging
        store_error(data, str(e))
        # Re-raise for retry logic
        raise


def main() -> None:
    bad = robust_task.delay({"divisor": 0})
    good = robust_task.delay({"divisor": 4})
    try:
        bad.result_sync(timeout=10)
    except TaskFailed as exc:
        print(f"bad task failed: {exc.error_type}")
    print(f"good task still ran: {good.result_sync(timeout=10)}")
    print(f"stored errors: {[message for _, message in errors]}")
    record = get_task_monitor().get(bad.id)
    print(f"monitor: {record.status}, error {record.error!r}")


if __name__ == "__main__":
    main()
