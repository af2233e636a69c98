"""Task chaining (guide: "Task Design Patterns / 3. Task Chaining").

Each step is a sync task running on a worker thread; it enqueues the next with
``.delay()`` and no ``await``. ``current_task().parent_id`` links each step to the one
that enqueued it.

    python examples/chaining.py
"""

from __future__ import annotations

from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import get_local_executor
from pacificpy.background.monitor import get_task_monitor

local_executor = get_local_executor(max_workers=4)
configure_background_tasks(local_executor)


def process_step_one(data: dict) -> dict:
    return {**data, "validated": True}


def process_step_two(data: dict) -> dict:
    return {**data, "enriched": True}


def process_step_three(data: dict) -> dict:
    print(f"step three got {sorted(data)}")
    return {**data, "stored": True}


# -- the guide's tasks ------------------------------------------------------------------------
@background
def step_one(data: dict):
    result = process_step_one(data)
    # Enqueue next step
    step_two.delay(result)
    return result


@background
def step_two(data: dict):
    result = process_step_two(data)
    # Enqueue final step
    step_three.delay(result)
    return result


@background
def step_three(data: dict):
    return process_step_three(data)


def main() -> None:
    first = step_one.delay({"order": 1})
    local_executor.join(timeout=10)  # wait until the whole chain has run
    monitor = get_task_monitor()
    two = monitor.list(name=step_two.name)[0]
    three = monitor.list(name=step_three.name)[0]
    print(f"step_two's parent is step_one: {two.parent_id == first.id}")
    print(f"step_three's parent is step_two: {three.parent_id == two.id}")
    print(f"final status: {three.status}")


if __name__ == "__main__":
    main()
