"""Every script under examples/ runs to completion and shows what its section promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

EXPECTED = {
    "idempotency": [
        "first run: updated",
        "same update again: already_updated",
        "same idempotency key, same task id: True",
        "updates applied in total: 2",
    ],
    "retry": [
        "charge_card attempt 3",
        "built-in retries: {'payment_id': 'pay-1', 'status': 'charged'}",
        "monitor: completed after 3 attempts",
        "manual loop: {'processed': {'order': 42}} after 2 calls",
    ],
    "chaining": [
        "step three got ['enriched', 'order', 'validated']",
        "step_two's parent is step_one: True",
        "step_three's parent is step_two: True",
        "final status: completed",
    ],
    "error_handling": [
        "bad task failed: ZeroDivisionError",
        "good task still ran: 25",
        "stored errors: ['integer division or modulo by zero']",
        "monitor: failed",
    ],
    "dead_letters": [
        "guide's dlq_task: {'status': 'moved_to_dlq'}",
        "dead letters: 1: ship_order args=[{'order': 2}] attempts=3",
        "requeued: {'shipped': 2}",
        "dead letters left: 0",
        "purged: 1",
    ],
    "monitoring": [
        "hand-reported record: monitored_task completed result={'total': 6}",
        "by context: completed result={'total': 9}",
        "task_duration observations: 3",
    ],
    "durable": [
        "first process killed by signal 9, with the report running",
        "after restart: invoice 1 sent",
        "after restart: invoice 3 sent",
        "report after the crash: done, attempt 1",
        "tasks left in the file: 0",
    ],
    "queue_length": [
        "queue length at start: 0",
        "queue length after 1500 more tasks on 2 busy workers: 1500",
        "ALERT: High queue backlog detected",
        "queue length once drained: 0",
        "alerts sent: 1",
    ],
}


def run_script(path: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str) -> None:
    proc = run_script(REPO_ROOT / "examples" / f"{name}.py")
    assert proc.returncode == 0, proc.stderr
    for line in EXPECTED[name]:
        assert line in proc.stdout, f"{line!r} missing from:\n{proc.stdout}\n{proc.stderr}"


def test_error_handling_logs_the_traceback() -> None:
    proc = run_script(REPO_ROOT / "examples" / "error_handling.py")
    assert "Traceback (most recent call last)" in proc.stderr
    assert "ZeroDivisionError" in proc.stderr
