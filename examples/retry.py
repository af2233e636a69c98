"""Retry logic (guide: "Task Design Patterns / 2. Retry Logic").

The built-in way, ``@background(retries=...)``: the executor retries with exponential
backoff and full jitter, holding no worker while it waits. Then the guide's hand-written
loop, which also works (it sleeps inside the task, so it holds its worker meanwhile).

    python examples/retry.py
"""

from __future__ import annotations

import random
import time

from pacificpy.background import current_task
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import get_local_executor
from pacificpy.background.monitor import get_task_monitor

local_executor = get_local_executor(max_workers=4)
configure_background_tasks(local_executor)


class TransientError(Exception):
    """A failure worth retrying (a timeout, a 503...)."""


calls = {"flaky": 0, "process_data": 0}


# -- built in: retries with backoff ----------------------------------------------------------
@background(retries=3, retry_backoff=0.05, retry_on=(TransientError,))
def charge_card(payment_id: str) -> dict:
    ctx = current_task()
    calls["flaky"] += 1
    print(f"charge_card attempt {ctx.attempt}")
    if ctx.attempt < 3:
        raise TransientError("payment gateway busy")
    return {"payment_id": payment_id, "status": "charged"}


# -- the guide's manual loop --------------------------------------------------------------------
def process_data(data: dict) -> dict:
    calls["process_data"] += 1
    if calls["process_data"] == 1:
        raise TransientError("first call fails")
    return {"processed": data}


@background
def process_with_retry(data: dict, max_retries: int = 3):
    for attempt in range(max_retries + 1):
        try:
            return process_data(data)
        except TransientError as e:
            if attempt == max_retries:
                raise e

            # Exponential backoff
            wait_time = (2**attempt) + random.uniform(0, 1)
            time.sleep(wait_time)


def main() -> None:
    handle = charge_card.delay("pay-1")
    print(f"built-in retries: {handle.result_sync(timeout=10)}")
    record = get_task_monitor().get(handle.id)
    print(f"monitor: {record.status} after {record.attempts} attempts")

    result = process_with_retry.delay({"order": 42}).result_sync(timeout=10)
    print(f"manual loop: {result} after {calls['process_data']} calls")


if __name__ == "__main__":
    main()
