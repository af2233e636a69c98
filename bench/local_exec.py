"""Scenarios 2, 4 and 5 (local part): the in-process executor against its bare peers.

Each contender runs in a fresh interpreter (``python -m bench.local_exec MODE CONTENDER N``)
so that one's garbage and warm caches do not bias the next; the parent alternates them.

- ``throughput``: per-call cost of the enqueue call (µs) and no-op tasks/s, N calls.
  Sync contenders: the cost is first measured with the 4 workers blocked (the pure cost
  of the call), then tasks/s = N / (first call -> all N done) with the workers running.
  Async contenders: N calls in one stretch on the loop, then tasks/s to the last one done.
- ``memory``: RSS growth with N tasks queued behind 4 blocked workers.
- ``pickup``: time from the enqueue call returning to the task starting, one at a time,
  with idle workers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import gc
import json
import sys
import time
from typing import Any

from bench._common import (
    RAW,
    Options,
    log,
    percentile,
    rotate,
    run_child,
    watched,
    write_jsonl,
)

WORKERS = 4

THROUGHPUT = [
    "threadpool-submit",
    "pacificpy-delay-sync",
    "asyncio-create-task",
    "pacificpy-delay-async",
    "asyncio-create-task-uvloop",
    "pacificpy-delay-async-uvloop",
]
MEMORY = ["threadpool-futures", "pacificpy-local"]
PICKUP = [
    "threadpool-submit",
    "pacificpy-local-sync",
    "asyncio-create-task",
    "pacificpy-local-async",
]


# --------------------------------------------------------------------------- children


def _executor(n: int) -> Any:
    from pacificpy.background.decorators import configure_background_tasks
    from pacificpy.background.local import get_local_executor

    ex = get_local_executor(WORKERS, max_queue_size=max(n, 1) + 100)
    configure_background_tasks(ex)
    return ex


def _timed_calls(n: int, call: Any, fn: Any) -> float:
    """Seconds for ``n`` enqueues: ``call(fn)`` (a pool's submit) or ``fn()`` (``.delay``).

    Two loops rather than a wrapper, so neither contender pays for an extra call layer.
    """
    t0 = time.perf_counter()
    if call:
        for _ in range(n):
            call(fn)
    else:
        for _ in range(n):
            fn()
    return time.perf_counter() - t0


def _sync_throughput(contender: str, n: int) -> dict[str, Any]:
    from bench import _local_tasks as t

    if contender == "threadpool-submit":
        pool = cf.ThreadPoolExecutor(WORKERS)
        call = pool.submit
        fn: Any = t.noop_fn
        blocker = lambda: pool.submit(t.RELEASE.wait, 120)  # noqa: E731
    else:
        ex = _executor(n)
        call = None
        fn = t.noop_sync.delay
        blocker = t.block.delay
    # Warm up (threads started, caches filled), then the pure call cost, workers blocked.
    t.COUNTER.reset(1000)
    for _ in range(1000):
        call(fn) if call else fn()
    t.COUNTER.done.wait(60)
    t.RELEASE.clear()
    for _ in range(WORKERS):
        blocker()
    t.COUNTER.reset(n)
    gc.collect()
    blocked_call_s = _timed_calls(n, call, fn)
    t.RELEASE.set()
    if not t.COUNTER.done.wait(120):
        raise RuntimeError("blocked phase did not finish")
    # Throughput with the workers running.
    t.COUNTER.reset(n)
    gc.collect()
    t0 = time.perf_counter()
    call_s = _timed_calls(n, call, fn)
    if not t.COUNTER.done.wait(120):
        raise RuntimeError("throughput phase did not finish")
    total_s = time.perf_counter() - t0
    if call:
        pool.shutdown(wait=True)
    else:
        ex.shutdown_sync(timeout=10)
    return {
        "n": n,
        "call_us": blocked_call_s / n * 1e6,
        "call_us_running": call_s / n * 1e6,
        "jobs_s": n / total_s,
        "us_per_job": total_s / n * 1e6,
    }


async def _async_throughput(contender: str, n: int) -> dict[str, Any]:
    from bench import _local_tasks as t

    pp = contender.startswith("pacificpy")
    if pp:
        ex = _executor(n)
        await ex.startup()
        delay = t.noop_async.delay
    loop = asyncio.get_running_loop()
    results = {}
    for phase, count in (("warmup", 1000), ("measure", n)):
        t.COUNTER.reset(count)
        t.COUNTER.adone = asyncio.Event()
        gc.collect()
        t0 = time.perf_counter()
        if pp:
            for _ in range(count):
                delay()
        else:
            tasks = set()
            for _ in range(count):
                task = loop.create_task(t.anoop_fn())
                tasks.add(task)  # keep a reference, as the docs of create_task ask
                task.add_done_callback(tasks.discard)
        call_s = time.perf_counter() - t0
        await asyncio.wait_for(t.COUNTER.adone.wait(), 120)
        total_s = time.perf_counter() - t0
        results[phase] = (call_s, total_s)
    if pp:
        await ex.shutdown()
    call_s, total_s = results["measure"]
    return {"n": n, "call_us": call_s / n * 1e6, "jobs_s": n / total_s,
            "us_per_job": total_s / n * 1e6}  # fmt: skip


def child_throughput(contender: str, n: int) -> dict[str, Any]:
    """One throughput contender, in this process."""
    if "async" in contender or "create-task" in contender:
        if contender.endswith("-uvloop"):
            import uvloop

            return uvloop.run(_async_throughput(contender, n))
        return asyncio.run(_async_throughput(contender, n))
    return _sync_throughput(contender, n)


def _rss() -> int:
    import psutil

    gc.collect()
    return int(psutil.Process().memory_info().rss)


def child_memory(contender: str, n: int) -> dict[str, Any]:
    """RSS growth with ``n`` tasks queued behind blocked workers."""
    from bench import _local_tasks as t

    t.RELEASE.clear()
    if contender == "threadpool-futures":
        pool = cf.ThreadPoolExecutor(WORKERS)
        for _ in range(WORKERS):
            pool.submit(t.RELEASE.wait, 120)
        base = _rss()
        for _ in range(n):
            pool.submit(t.noop_fn)
    else:
        ex = _executor(n)
        for _ in range(WORKERS):
            t.block.delay()
        base = _rss()
        for _ in range(n):
            t.noop_sync.delay()
    after = _rss()
    t.COUNTER.reset(n)
    t.RELEASE.set()
    if not t.COUNTER.done.wait(120):
        raise RuntimeError("queued tasks did not drain")
    if contender == "threadpool-futures":
        pool.shutdown(wait=True)
    else:
        ex.shutdown_sync(timeout=10)
    return {"n": n, "rss_base_mb": base / 2**20, "rss_mb": after / 2**20,
            "delta_mb": (after - base) / 2**20, "bytes_per_task": (after - base) / n}  # fmt: skip


async def _async_pickup(contender: str, samples: int) -> list[float]:
    from bench import _local_tasks as t

    loop = asyncio.get_running_loop()
    if contender == "pacificpy-local-async":
        ex = _executor(10)
        await ex.startup()
    lat = []
    tasks = set()
    for i in range(samples + 20):
        t.ASTARTED = asyncio.Event()
        if contender == "pacificpy-local-async":
            t.pickup_async.delay()
        else:
            task = loop.create_task(t.apickup_fn())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        returned = time.perf_counter()
        await asyncio.wait_for(t.ASTARTED.wait(), 10)
        if i >= 20:  # the first ones warm up
            lat.append(t.STARTED[-1] - returned)
    if contender == "pacificpy-local-async":
        await ex.shutdown()
    return lat


def child_pickup(contender: str, samples: int) -> dict[str, Any]:
    """Pickup latency samples, one task at a time, idle workers."""
    from bench import _local_tasks as t

    if contender in ("asyncio-create-task", "pacificpy-local-async"):
        import uvloop

        lat = uvloop.run(_async_pickup(contender, samples))
    else:
        if contender == "threadpool-submit":
            pool = cf.ThreadPoolExecutor(WORKERS)
            send = lambda: pool.submit(t.pickup_fn)  # noqa: E731
        else:
            ex = _executor(10)
            send = t.pickup_sync.delay
        lat = []
        for i in range(samples + 20):
            t.STARTED_EVENT.clear()
            send()
            returned = time.perf_counter()
            if not t.STARTED_EVENT.wait(10):
                raise RuntimeError("task did not start")
            if i >= 20:
                lat.append(t.STARTED[-1] - returned)
            time.sleep(0.001)  # let the worker finish and go idle again (not a sync point)
        if contender == "threadpool-submit":
            pool.shutdown()
        else:
            ex.shutdown_sync(timeout=10)
    return pickup_summary(lat)


def pickup_summary(lat_s: list[float]) -> dict[str, Any]:
    """p50/p99/max in ms of pickup latencies given in seconds."""
    ms = sorted(x * 1000 for x in lat_s)
    return {"samples": len(ms), "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
            "max_ms": ms[-1] if ms else None, "min_ms": ms[0] if ms else None}  # fmt: skip


# --------------------------------------------------------------------------- parent


def _rounds(kind: str, contenders: list[str], n: int, opts: Options, stamp: str,
            timeout: float) -> list[dict[str, Any]]:  # fmt: skip
    records = []
    wanted = [c for c in contenders if opts.wanted(f"{kind}:{c}")]
    for rnd in range(1, opts.rounds + 1):
        for contender in rotate(wanted, rnd - 1):
            rec: dict[str, Any] = {"scenario": kind, "contender": contender, "round": rnd,
                                   "run": stamp, "ok": False}  # fmt: skip
            try:
                with watched(rec, 0.3 if opts.quick else 0.5):
                    rec.update(run_child(["bench.local_exec", kind, contender, str(n)], timeout))
                rec["ok"] = True
            except Exception as exc:
                rec["error"] = str(exc)
            log("%s r%d %-28s %s", kind, rnd, contender,
                json.dumps({k: round(v, 2) for k, v in rec.items()
                            if k in ("call_us", "jobs_s", "delta_mb", "p50_ms", "p99_ms")})
                if rec["ok"] else f"FAILED {rec.get('error')}")  # fmt: skip
            records.append(rec)
            write_jsonl(RAW / f"{kind}-{stamp}.jsonl", [rec])
    return records


def run_local(opts: Options, stamp: str) -> list[dict[str, Any]]:
    """Scenario 2."""
    n = 20_000 if opts.quick else 100_000
    return _rounds("local", THROUGHPUT, n, opts, stamp, 240)


def run_memory(opts: Options, stamp: str) -> list[dict[str, Any]]:
    """Scenario 4 (100,000 tasks, 20,000 with ``--quick``)."""
    n = 20_000 if opts.quick else 100_000
    return _rounds("memory", MEMORY, n, opts, stamp, 240)


def run_pickup(opts: Options, stamp: str) -> list[dict[str, Any]]:
    """Scenario 5, in-process part."""
    samples = 200 if opts.quick else 1000
    return _rounds("pickup-local", PICKUP, samples, opts, stamp, 120)


def main() -> None:
    """``python -m bench.local_exec throughput|memory|pickup-local CONTENDER N``."""
    mode, contender, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    fn = {"local": child_throughput, "memory": child_memory, "pickup-local": child_pickup}[mode]
    print(json.dumps(fn(contender, n)))


if __name__ == "__main__":
    main()
