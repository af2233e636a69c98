"""``python -m bench sqlite``: the SQLite backend beside Huey's ``SqliteHuey``, same body.

Each contender runs in a fresh interpreter (``python -m bench.sqlite_queue MODE CONTENDER
N``), on a fresh file in a temp directory; the parent alternates them round by round.

- ``enqueue``: N enqueues from one client, each confirmed before the next (PacificPy:
  ``await task.delay()``, the row committed; the local executor: the same call, its
  workers blocked so the call is measured alone; Huey: ``task()``, its row committed).
  No consumer runs. Enqueues per second.
- ``e2e``: one worker process already running and idle (``python -m
  pacificpy.background.backends.sqlite.worker`` with 4 threads; ``huey_consumer -w 4 -k
  thread``), then N enqueues from this process; seconds from the first enqueue until the
  N-th task has run. The body appends one byte to a file (``bench/workers/sqlite_peers``).
- ``pickup``: time from the enqueue call returning to the task starting, one at a time,
  idle workers: in process (SQLite backend, local executor) and across processes (SQLite
  worker process, Huey consumer).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench._common import (
    RAW,
    ROOT,
    Options,
    log,
    percentile,
    rotate,
    run_child,
    watched,
    write_jsonl,
)

WORKERS = 4
FIGURES = ("enqueue_s", "jobs_s", "p50_ms", "p99_ms")
ENQUEUE = ["pacificpy-sqlite", "pacificpy-local", "huey-sqlite", "huey-sqlite-nofsync"]
E2E = ["pacificpy-sqlite-worker", "huey-sqlite-consumer", "huey-sqlite-nofsync-consumer"]
PICKUP = ["pacificpy-sqlite-inproc", "pacificpy-local-inproc", "pacificpy-sqlite-worker",
          "huey-sqlite-consumer", "huey-sqlite-nofsync-consumer"]  # fmt: skip


def _huey(contender: str) -> dict[str, Any]:
    """The Huey instance of ``contender`` and its tasks (``bench.workers.sqlite_peers``)."""
    from bench.workers import sqlite_peers as p

    return p.HUEY["huey_nofsync" if "nofsync" in contender else "huey"]


# --------------------------------------------------------------------------- children


def _fresh_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="pacificpy-bench-sqlite-"))


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["BENCH_SQLITE_DIR"] = str(tmp)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT),
                                                      env.get("PYTHONPATH")]))  # fmt: skip
    return env


def _enqueue(contender: str, n: int) -> dict[str, Any]:
    tmp = _fresh_dir()
    os.environ["BENCH_SQLITE_DIR"] = str(tmp)
    from bench.workers import sqlite_peers as p

    if contender.startswith("huey"):
        h = _huey(contender)
        for _ in range(200):
            h["noop"]()
        t0 = time.perf_counter()
        for _ in range(n):
            h["noop"]()
        elapsed = time.perf_counter() - t0
        assert len(h["huey"]) >= n
        return {"n": n, "enqueue_s": n / elapsed, "us_per_call": elapsed / n * 1e6}

    async def main() -> float:
        if contender == "pacificpy-local":
            backend = p.configure_local(n)
            for _ in range(WORKERS):
                p.block.delay()  # the workers wait: the enqueue is measured alone
        else:
            backend = p.configure_sqlite(consume=False)
        for _ in range(200):
            await p.noop.delay()
        t0 = time.perf_counter()
        for _ in range(n):
            await p.noop.delay()
        elapsed = time.perf_counter() - t0
        p.RELEASE.set()
        backend.shutdown_sync(timeout=10)
        return elapsed

    elapsed = asyncio.run(main())
    return {"n": n, "enqueue_s": n / elapsed, "us_per_call": elapsed / n * 1e6}


def _start_worker(contender: str, tmp: Path) -> subprocess.Popen[bytes]:
    if contender.startswith("huey"):
        instance = "huey_nofsync" if "nofsync" in contender else "huey"
        cmd = [sys.executable, "-m", "huey.bin.huey_consumer",
               f"bench.workers.sqlite_peers.{instance}",
               "-w", str(WORKERS), "-k", "thread"]  # fmt: skip
        ready = "consumer started"
    else:
        cmd = [sys.executable, "-m", "pacificpy.background.backends.sqlite.worker",
               "bench.workers.sqlite_peers"]  # fmt: skip
        ready = "SQLite worker (pid"
    log_path = tmp / "worker.log"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(tmp), stdout=log_path.open("wb"),
                            stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 60
    while ready not in log_path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{contender} worker did not start: {log_path.read_text()[-2000:]}")
        time.sleep(0.02)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _e2e(contender: str, n: int) -> dict[str, Any]:
    tmp = _fresh_dir()
    os.environ["BENCH_SQLITE_DIR"] = str(tmp)
    from bench.workers import sqlite_peers as p

    huey = contender.startswith("huey")
    if not huey:
        p.configure_sqlite(consume=False)
    proc = _start_worker(contender, tmp)
    try:
        done = tmp / "done.bin"
        t0 = time.perf_counter()
        enqueue = _huey(contender)["mark"] if huey else p.mark.delay
        for _ in range(n):
            enqueue()
        enqueued = time.perf_counter() - t0
        deadline = time.monotonic() + 600
        while not done.exists() or done.stat().st_size < n:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{contender}: not all {n} tasks ran")
            time.sleep(0.002)
        total = time.perf_counter() - t0
    finally:
        _stop(proc)
    return {"n": n, "jobs_s": n / total, "total_s": total, "enqueue_part_s": enqueued}


def _pickup(contender: str, n: int) -> dict[str, Any]:
    tmp = _fresh_dir()
    os.environ["BENCH_SQLITE_DIR"] = str(tmp)
    from bench.workers import sqlite_peers as p

    samples: list[float] = []
    if contender.endswith("-inproc"):
        if contender.startswith("pacificpy-local"):
            backend = p.configure_local(n)
        else:
            backend = p.configure_sqlite(consume=True)
        for _ in range(n + 20):
            p.STARTED_EVENT.clear()
            sent = time.perf_counter()
            p.probe.delay()
            if not p.STARTED_EVENT.wait(30):
                raise RuntimeError("probe did not start")
            samples.append(p.STARTED[-1] - sent)
        backend.shutdown_sync(timeout=10)
    else:
        huey = contender.startswith("huey")
        if not huey:
            p.configure_sqlite(consume=False)
        proc = _start_worker(contender, tmp)
        stamp = tmp / "probe.txt"
        try:
            for _ in range(n + 20):
                stamp.unlink(missing_ok=True)
                sent = time.time()
                _huey(contender)["probe"]() if huey else p.file_probe.delay()
                deadline = time.monotonic() + 30
                while not stamp.exists() or not stamp.read_text():
                    if time.monotonic() > deadline:
                        raise RuntimeError("probe did not start")
                    time.sleep(0.0005)
                samples.append(float(stamp.read_text()) - sent)
        finally:
            _stop(proc)
    ms = sorted(s * 1000 for s in samples[20:])
    return {"n": n, "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99)}


# --------------------------------------------------------------------------- parent


def _rounds(
    mode: str, contenders: list[str], n: int, opts: Options, stamp: str
) -> list[dict[str, Any]]:
    records = []
    for r in range(opts.rounds):
        for contender in rotate(contenders, r):
            if not opts.wanted(f"sqlite-{mode}:{contender}"):
                continue
            rec: dict[str, Any] = {"scenario": f"sqlite-{mode}", "name": contender, "round": r,
                                   "run": stamp}  # fmt: skip
            with watched(rec, 0.5):
                try:
                    rec.update(run_child(["bench.sqlite_queue", mode, contender, str(n)], 900))
                    rec["ok"] = True
                except RuntimeError as exc:
                    rec.update(ok=False, error=str(exc)[-800:])
            shown = {k: round(v, 3) if isinstance(v, float) else v for k, v in rec.items()
                     if k in (*FIGURES, "error", "disturbed")}  # fmt: skip
            log("sqlite-%s %-26s round %d: %s", mode, contender, r, shown)
            records.append(rec)
    write_jsonl(RAW / f"sqlite-{stamp}.jsonl", records)
    return records


def run(opts: Options, stamp: str) -> None:
    """Every SQLite scenario, then a summary table on the log."""
    n = 1000 if opts.quick else 5000
    records = _rounds("enqueue", ENQUEUE, n, opts, stamp)
    records += _rounds("e2e", E2E, n, opts, stamp)
    records += _rounds("pickup", PICKUP, 100 if opts.quick else 300, opts, stamp)
    _summary(records)


def _summary(records: list[dict[str, Any]]) -> None:
    import statistics

    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in records:
        if rec.get("ok"):
            by.setdefault((rec["scenario"], rec["name"]), []).append(rec)
    lines = ["", "scenario         contender                  median (min-max)"]
    for (scenario, name), recs in by.items():
        for key in FIGURES:
            values = [r[key] for r in recs if key in r]
            if values:
                lines.append(f"{scenario:16} {name:26} {key} {statistics.median(values):.2f} "
                             f"({min(values):.2f}-{max(values):.2f})")  # fmt: skip
    log("%s", "\n".join(lines))
    out = RAW.parent / "sqlite.json"
    table = {f"{s}:{n}": {k: statistics.median([r[k] for r in rs])
                          for k in FIGURES if k in rs[0]}
             for (s, n), rs in by.items()}  # fmt: skip
    out.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")


def main() -> None:
    """``python -m bench.sqlite_queue enqueue|e2e|pickup CONTENDER N``."""
    mode, contender, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    fn = {"enqueue": _enqueue, "e2e": _e2e, "pickup": _pickup}[mode]
    print(json.dumps(fn(contender, n)))


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
