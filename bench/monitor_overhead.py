"""What monitoring costs: local no-op tasks/s with the monitor off, in memory, and in Redis.

``python -m bench.monitor_overhead [--tasks N] [--rounds R] [--json PATH]``

One process, one local executor (1 worker thread: with more, GIL hand-offs between the
workers and the producer swing the figures by ±30% from run to run), one private
redis-server. Each round runs N
no-op ``.delay()`` calls to completion under each setting, the settings alternating (and
rotating their order) round after round so that drift on a shared machine hits them all
alike; the table shows medians of tasks/s (wall clock) and of this process's CPU time per
task, which other programs on a busy machine disturb much less. The Redis store's time
includes writing every buffered event (its flush) before the round ends.

``off`` is ``configure_task_monitor(enabled=False)``; ``memory`` is the default store;
``redis`` is ``configure_task_monitor(redis_url=...)``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench._common import RedisServer, rotate

MODES = ("off", "memory", "redis")


def run(tasks: int, rounds: int) -> dict[str, Any]:
    """Measure and return ``{"tasks": N, "rounds": R, "modes": {mode: {...}}}``."""
    from pacificpy.background.decorators import (
        background,
        configure_background_tasks,
        reset_background_tasks,
    )
    from pacificpy.background.local import get_local_executor
    from pacificpy.background.monitor import configure_task_monitor, reset_task_monitor

    @background(name="bench.monitor_overhead.noop")
    def noop(i: int) -> int:
        return i

    redis = RedisServer().start()
    executor = get_local_executor(max_workers=1, max_queue_size=tasks + 1)
    configure_background_tasks(executor)
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    cpu: dict[str, list[float]] = {m: [] for m in MODES}
    try:
        for r in range(rounds + 1):  # round 0 warms up and is not counted
            for mode in rotate(MODES, r):
                if mode == "off":
                    monitor = configure_task_monitor(enabled=False)
                elif mode == "memory":
                    monitor = configure_task_monitor()
                else:
                    monitor = configure_task_monitor(redis_url=redis.url)
                    redis.client().flushdb()
                started = time.perf_counter()
                cpu_started = time.process_time()
                for i in range(tasks):
                    noop.delay(i)
                if not executor._wait_idle(120):
                    raise RuntimeError("the executor did not finish the round in time")
                monitor.flush()
                elapsed = time.perf_counter() - started
                cpu_used = time.process_time() - cpu_started
                if r:
                    rates[mode].append(tasks / elapsed)
                    cpu[mode].append(cpu_used / tasks * 1e6)
    finally:
        executor.shutdown_sync(timeout=10)
        reset_task_monitor()
        reset_background_tasks()
        redis.stop()
    base = statistics.median(rates["off"])
    base_cpu = statistics.median(cpu["off"])
    modes = {}
    for mode, values in rates.items():
        median = statistics.median(values)
        cpu_us = statistics.median(cpu[mode])
        modes[mode] = {
            "tasks_per_s": round(median),
            "runs": [round(v) for v in values],
            "cost_pct": round(100 * (1 - median / base), 1),
            "cpu_us_per_task": round(cpu_us, 1),
            "cpu_cost_pct": round(100 * (cpu_us / base_cpu - 1), 1),
        }
    return {"tasks": tasks, "rounds": rounds, "modes": modes}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.monitor_overhead", description=__doc__)
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks per round")
    parser.add_argument("--rounds", type=int, default=7, help="counted rounds per setting")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    ns = parser.parse_args(argv)
    result = run(ns.tasks, ns.rounds)
    out = sys.stdout
    out.write(f"local executor, 1 worker, {ns.tasks} no-op tasks x {ns.rounds} rounds (medians)\n")
    out.write(f"{'monitor':<10}{'tasks/s':>10}{'cost':>9}{'CPU µs/task':>14}{'CPU cost':>10}\n")
    for mode, row in result["modes"].items():
        cost = "-" if mode == "off" else f"{row['cost_pct']:.1f}%"
        cpu_cost = "-" if mode == "off" else f"{row['cpu_cost_pct']:.1f}%"
        out.write(
            f"{mode:<10}{row['tasks_per_s']:>10}{cost:>9}"
            f"{row['cpu_us_per_task']:>14}{cpu_cost:>10}\n"
        )
    if ns.json is not None:
        ns.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
