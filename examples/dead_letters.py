"""Dead letters (guide: "Error Handling / Dead Letter Queue").

The guide's ``dlq_task`` moves data aside by hand after ``retry_count`` attempts. With
``@background(retries=...)`` the executor does it for you: a task that fails its last
attempt lands in the backend's dead-letter queue with its arguments, error and
traceback, where it can be inspected, requeued or purged.

    python examples/dead_letters.py
"""

from __future__ import annotations

import logging

from pacificpy.background import current_task
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import get_local_executor
from pacificpy.errors import TaskFailed

logging.basicConfig(level=logging.CRITICAL)  # the failures below are on purpose

local_executor = get_local_executor(max_workers=4)
configure_background_tasks(local_executor)

broken = {"on": True}
manual_dlq: list[tuple[dict, str]] = []


def process_data(data: dict) -> dict:
    if broken["on"]:
        raise ConnectionError("warehouse API is down")
    return {"shipped": data["order"]}


def send_to_dlq(data: dict, error: str) -> None:
    manual_dlq.append((data, error))


# -- the guide's task: a hand-made dead-letter queue --------------------------------------------
@background
def dlq_task(data: dict, retry_count: int = 0):
    max_retries = 5

    try:
        return process_data(data)
    except Exception as e:
        if retry_count >= max_retries:
            # Move to dead letter queue
            send_to_dlq(data, str(e))
            return {"status": "moved_to_dlq"}

        # Re-raise for retry
        raise


# -- the built-in dead-letter queue -----------------------------------------------------------
@background(retries=2, retry_backoff=0.01)
def ship_order(data: dict) -> dict:
    print(f"ship_order attempt {current_task().attempt}")
    return process_data(data)


def main() -> None:
    print(f"guide's dlq_task: {dlq_task.delay({'order': 1}, retry_count=5).result_sync(10)}")

    handle = ship_order.delay({"order": 2})
    try:
        handle.result_sync(timeout=10)
    except TaskFailed:
        pass
    letters = local_executor.dead_letters_sync()
    letter = letters[0]
    print(
        f"dead letters: {len(letters)}: {letter.task_name.rsplit('.', 1)[-1]} "
        f"args={letter.args} attempts={letter.attempts} error={letter.error!r}"
    )

    broken["on"] = False  # the API is back: requeue the dead letter
    task_id = local_executor.requeue_dead_letter_sync(letter.id)
    print(f"requeued: {handle.result_sync(timeout=10) if task_id == handle.id else task_id}")
    print(f"dead letters left: {len(local_executor.dead_letters_sync())}")

    broken["on"] = True
    ship_order.delay({"order": 3})
    local_executor.join(timeout=10)
    print(f"purged: {local_executor.purge_dead_letters_sync()}")


if __name__ == "__main__":
    main()
