"""Durable tasks on one machine, no server: the SQLite backend (docs/sqlite.md).

A first process enqueues three invoices and a report, starts the report, and is killed
with SIGKILL while the report runs (as the OOM killer or a power-cycled container would).
The second process opens the same file: the invoices run, and the report runs again once
the dead process's lease has expired. With the local executor all four would be gone.

    python examples/durable.py
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pacificpy.background import current_task, get_handle
from pacificpy.background.backend import SQLiteBackgroundBackend
from pacificpy.background.decorators import background, configure_background_tasks

LEASE = 1.0  # seconds; 30 by default. A task of a dead process runs again after it.


@background
def send_invoice(number: int) -> str:
    return f"invoice {number} sent"


@background
def build_report(started_file: str) -> dict:
    Path(started_file).write_text("started")
    time.sleep(2.0)
    ctx = current_task()
    assert ctx is not None
    return {"report": "done", "attempt": ctx.attempt}


def crashing_process(path: str, ids_file: str) -> None:
    """Enqueue, start the report, then die without any cleanup."""
    backend = SQLiteBackgroundBackend(path, max_workers=1, lease=LEASE)
    configure_background_tasks(backend)
    started = Path(path).with_suffix(".started")
    report = build_report.delay(str(started))  # runs first: it holds the only worker
    invoices = [send_invoice.delay(n) for n in (1, 2, 3)]  # committed: they wait in the file
    Path(ids_file).write_text(json.dumps([report.id, *[h.id for h in invoices]]))
    while not started.exists():
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="pacificpy-durable-"))
    path, ids_file = str(workdir / "tasks.db"), str(workdir / "ids.json")
    crash = subprocess.run([sys.executable, __file__, "--crash", path, ids_file], check=False)
    print(f"first process killed by signal {-crash.returncode}, with the report running")
    report_id, *invoice_ids = json.loads(Path(ids_file).read_text())

    backend = SQLiteBackgroundBackend(path, max_workers=2, lease=LEASE)
    configure_background_tasks(backend)
    backend.start()  # an app starts its workers at startup; a script says so
    for task_id in invoice_ids:
        print("after restart:", get_handle(task_id).result_sync(timeout=30))
    report = get_handle(report_id).result_sync(timeout=30)
    print(f"report after the crash: {report['report']}, attempt {report['attempt']}")
    backend.join(timeout=30)
    print("tasks left in the file:", backend.queue_length_sync())
    backend.shutdown_sync()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--crash"]:
        crashing_process(sys.argv[2], sys.argv[3])
    else:
        main()
