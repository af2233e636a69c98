"""``python -m bench all|http|asgi|local|redis|memory|pickup|sqlite|rabbit|report|profile``.

``all`` runs every scenario (about 20 minutes with the default 3 rounds; ``--quick``: one
round, smaller N, about 3 minutes), then writes ``bench/results/summary.json``, the CSV,
the chart and ``docs/benchmarks.md``. ``--only SUBSTR`` (repeatable) keeps the contenders
whose ``scenario:name`` contains SUBSTR, e.g. ``--only e2e:arq``.
"""

from __future__ import annotations

import argparse
import sys
import time

from bench._common import RAW, Options, RedisServer, environment, log, now_iso, write_jsonl

SCENARIOS = ("http", "asgi", "local", "redis", "memory", "pickup", "monitor", "sqlite")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run what it asks; the exit status is 0 unless it crashed."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("what", choices=[*SCENARIOS, "all", "report", "profile", "rabbit"])
    parser.add_argument("--quick", action="store_true", help="1 round, small N (~3 min)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3; quick 1)")
    parser.add_argument("--only", action="append", default=[], metavar="SUBSTR")
    parser.add_argument("--no-report", action="store_true", help="skip report generation")
    ns = parser.parse_args(argv)
    opts = Options(rounds=ns.rounds or (1 if ns.quick else 3), quick=ns.quick, only=ns.only)

    if ns.what == "report":
        from bench import report

        report.build()
        return 0
    if ns.what == "profile":
        from bench import profile_local

        profile_local.main(quick=ns.quick)
        return 0

    stamp = now_iso().replace(":", "").replace("-", "")
    started = time.monotonic()
    command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    meta = {"scenario": "meta", "run": stamp, "started": now_iso(), "command": command,
            "quick": opts.quick, "rounds": opts.rounds, "only": opts.only,
            "environment": environment()}  # fmt: skip
    write_jsonl(RAW / f"meta-{stamp}.jsonl", [meta])
    todo = SCENARIOS if ns.what == "all" else (ns.what,)
    log("bench run %s: %s (rounds=%d%s)", stamp, ", ".join(todo), opts.rounds,
        ", quick" if opts.quick else "")  # fmt: skip
    if "local" in todo:
        from bench import local_exec

        local_exec.run_local(opts, stamp)
    if "memory" in todo:
        from bench import local_exec

        local_exec.run_memory(opts, stamp)
    if "asgi" in todo:
        from bench import asgi_inproc

        asgi_inproc.run(opts, stamp)
    if "http" in todo:
        from bench import http_load

        http_load.run(opts, stamp)
    if "redis" in todo or "pickup" in todo:
        from bench import local_exec, redis_queues

        if "pickup" in todo:
            local_exec.run_pickup(opts, stamp)
        server = RedisServer().start()
        try:
            if "redis" in todo:
                redis_queues.run_enqueue(server, opts, stamp)
                redis_queues.run_e2e(server, opts, stamp)
            if "pickup" in todo:
                redis_queues.run_pickup(server, opts, stamp)
        finally:
            server.stop()
    if "rabbit" in todo:  # not in "all": it needs the machine's RabbitMQ
        from bench import rabbit_queues

        rabbit_queues.run(opts, stamp)
    if "sqlite" in todo:
        from bench import sqlite_queue

        sqlite_queue.run(opts, stamp)
    if "monitor" in todo:
        from bench import monitor_overhead

        rounds = ["--rounds", "2", "--tasks", "5000"] if opts.quick else []
        monitor_overhead.main([*rounds, "--json", str(RAW.parent / "monitor-overhead.json")])
    end = {"scenario": "meta-end", "run": stamp, "finished": now_iso(),
           "elapsed_s": round(time.monotonic() - started)}  # fmt: skip
    write_jsonl(RAW / f"meta-{stamp}.jsonl", [end])
    log("bench run %s done in %.0f s", stamp, time.monotonic() - started)
    if not ns.no_report:
        from bench import report

        report.build()
    return 0


if __name__ == "__main__":
    sys.exit(main())
