"""Monitoring hooks (guide: "Monitoring and Observability").

Every task is tracked automatically. The guide's hand-reported pattern also works, and
its ``# Or get from context`` is ``current_task().id``. ``record_metric`` collects the
guide's metrics.

    python examples/monitoring.py
"""

from __future__ import annotations

import time
import uuid

from pacificpy.background import current_task
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import get_local_executor
from pacificpy.background.monitor import (
    configure_task_monitor,
    record_metric,
    record_task_start,
    update_task_status,
)

local_executor = get_local_executor(max_workers=4)
configure_background_tasks(local_executor)
monitor = configure_task_monitor()


def process_data(data: dict) -> dict:
    return {"total": sum(data["values"])}


# -- the guide's tasks ---------------------------------------------------------------------------
@background
def monitored_task(data: dict):
    task_id = str(uuid.uuid4())  # Or get from context
    record_task_start(task_id, "monitored_task")

    try:
        result = process_data(data)
        update_task_status(task_id, "completed", result)
        return result
    except Exception as e:
        update_task_status(task_id, "failed", str(e))
        raise


@background
def timed_task(data: dict):
    start_time = time.time()

    try:
        result = process_data(data)
        duration = time.time() - start_time
        # Record metrics
        record_metric("task_duration", duration)
        return result
    except Exception as e:  # noqa: F841 - the guide's code, as written
        duration = time.time() - start_time
        record_metric("task_failure_duration", duration)
        raise


# -- the same, with the id from the context ----------------------------------------------------
@background
def monitored_by_context(data: dict):
    task_id = current_task().id
    record_task_start(task_id, "monitored_by_context")
    result = process_data(data)
    update_task_status(task_id, "completed", result)
    return result


def main() -> None:
    monitored_task.delay({"values": [1, 2, 3]}).result_sync(timeout=10)
    hand = monitor.list(name="monitored_task")[0]
    print(f"hand-reported record: {hand.name} {hand.status} result={hand.result_preview}")

    handle = monitored_by_context.delay({"values": [4, 5]})
    handle.result_sync(timeout=10)
    record = monitor.get(handle.id)
    print(f"by context: {record.status} result={record.result_preview}")

    for _ in range(3):
        timed_task.delay({"values": [1]}).result_sync(timeout=10)
    count = monitor.metrics().user[("task_duration", ())][0]
    print(f"task_duration observations: {count}")

    stats = monitor.stats()
    print(f"completed tasks: {stats['counts']['completed']}")
    print(f"tracked task names: {len(stats['tasks'])}")


if __name__ == "__main__":
    main()
