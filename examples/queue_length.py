"""Queue management (guide: "Scaling Considerations / 2. Queue Management").

The guide's ``get_queue_length()`` is one call on the configured backend;
``check_queue_backlog()`` then alerts as written.

    python examples/queue_length.py
"""

from __future__ import annotations

import threading
import time

from pacificpy.background import get_queue_length as backend_queue_length
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import get_local_executor

local_executor = get_local_executor(max_workers=2)
configure_background_tasks(local_executor)

gate = threading.Event()
alerts: list[str] = []


def send_alert(message: str) -> None:
    alerts.append(message)
    print(f"ALERT: {message}")


@background
def import_row(row: int) -> int:
    gate.wait(timeout=30)  # the workers are busy elsewhere until the gate opens
    return row


# -- the guide's functions --------------------------------------------------------------------
# Monitor queue length
def get_queue_length():
    # Implementation depends on backend
    return backend_queue_length("default")


# Alert on queue backlog
def check_queue_backlog():
    if get_queue_length() > 1000:
        send_alert("High queue backlog detected")


def main() -> None:
    check_queue_backlog()
    print(f"queue length at start: {get_queue_length()}")
    import_row.delay(-1)  # two tasks keep both workers busy...
    import_row.delay(-2)
    deadline = time.monotonic() + 10
    while get_queue_length() and time.monotonic() < deadline:  # ...once they have started
        time.sleep(0.01)
    for row in range(1500):
        import_row.delay(row)
    print(f"queue length after 1500 more tasks on 2 busy workers: {get_queue_length()}")
    check_queue_backlog()
    gate.set()
    local_executor.join(timeout=30)
    print(f"queue length once drained: {get_queue_length()}")
    check_queue_backlog()
    print(f"alerts sent: {len(alerts)}")


if __name__ == "__main__":
    main()
