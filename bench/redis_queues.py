"""Scenarios 3 and 5 (Redis part): enqueue, end to end and pickup through Redis.

A private ``redis-server`` on a free port (never 6379), started by the bench. Producers
run in a fresh interpreter per contender (``python -m bench.redis_queues MODE CONTENDER N
URL``); workers are started with each library's stock command.

- ``enqueue``: N jobs (one small JSON dict argument), one client, one at a time; jobs/s,
  p50/p99 µs per call, and Redis commands and bytes per job from INFO deltas.
- ``e2e``: fill the queue with N jobs (through the contender's own client), then start ONE
  worker; jobs/s = (N-1) / (last job done - first job done), so start-up is excluded
  (it is ``startup_s``: spawn -> first job done).
- ``pickup``: one idle worker; send one probe, wait for it to start, repeat; latency =
  the time the job started - the time the enqueue call returned.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._common import (
    BIN,
    RAW,
    ROOT,
    Options,
    RedisServer,
    child_env,
    log,
    percentile,
    rotate,
    run_child,
    terminate,
    watched,
    write_jsonl,
)

PAYLOAD_EMAIL = "user@example.com"

ENQUEUE = [
    "redis-lpush",
    "arq",
    "pacificpy-arq",
    "celery",
    "pacificpy-celery",
    "pacificpy-celery-async",
    "rq",
    "dramatiq",
]

#: contender -> (producer, worker command, extra environment, what)
E2E: dict[str, tuple[str, list[str], dict[str, str], str]] = {
    "arq-default": ("arq", [str(BIN / "arq"), "bench.workers.arq_raw.WorkerSettings"], {},
                    "raw arq, its defaults (max_jobs=10, poll_delay=0.5 s)"),
    "arq-tuned": ("arq", [str(BIN / "arq"), "bench.workers.arq_raw.WorkerSettingsTuned"], {},
                  "raw arq, poll_delay = PacificPy's default"),
    "pacificpy-arq": ("pacificpy-arq", [str(BIN / "arq"), "bench.workers.pp_arq.WorkerSettings"],
                      {}, "PacificPy on ARQ, backend.worker_settings() defaults, async task"),
    "celery-solo": ("celery", [str(BIN / "celery"), "-A", "bench.workers.celery_raw", "worker",
                               "--pool", "solo", "--concurrency", "1"], {},
                    "raw Celery, defaults, solo pool"),
    "celery-solo-alo": ("celery", [str(BIN / "celery"), "-A", "bench.workers.celery_raw",
                                   "worker", "--pool", "solo", "--concurrency", "1"],
                        {"BENCH_CELERY_ATLEASTONCE": "1"},
                        "raw Celery, solo pool, PacificPy's at-least-once settings"),
    "celery-solo-alo-results": ("celery", [str(BIN / "celery"), "-A", "bench.workers.celery_raw",
                                           "worker", "--pool", "solo", "--concurrency", "1"],
                                {"BENCH_CELERY_ATLEASTONCE": "1", "BENCH_CELERY_RESULTS": "1"},
                                "raw Celery, at-least-once settings, results kept in Redis"),
    "pacificpy-celery": ("pacificpy-celery", [str(BIN / "celery"), "-A",
                                              "bench.workers.pp_celery", "worker", "--pool",
                                              "solo", "--concurrency", "1"], {},
                         "PacificPy on Celery, solo pool, sync task"),
    "rq-simple": ("rq", [str(BIN / "rq"), "worker", "-w", "rq.worker.SimpleWorker", "default"],
                  {}, "RQ SimpleWorker (no fork per job)"),
    "dramatiq-p1t8": ("dramatiq", [str(BIN / "dramatiq"), "bench.workers.dramatiq_peer", "-p",
                                   "1", "-t", "8"], {}, "Dramatiq, 1 process x 8 threads"),
}  # fmt: skip

PICKUP = ["pacificpy-arq", "arq-tuned", "arq-default", "pacificpy-celery", "celery-solo-alo"]

FAMILY_MODULE = {
    "arq": None,
    "pacificpy-arq": None,
    "celery": "bench.workers.celery_raw",
    "pacificpy-celery": "bench.workers.pp_celery",
}


def arq_poll_default() -> float:
    """The poll delay PacificPy's ARQ backend uses by default.

    ``arq-tuned`` is raw arq with this same delay; a guessed value would compare the two at
    different delays without saying so, so anything unreadable stops the benchmark.

    Raises:
        RuntimeError: the backend's worker settings have no positive ``poll_delay``.
    """
    from arq.connections import RedisSettings

    from pacificpy.background.backend import ARQBackgroundBackend

    settings = ARQBackgroundBackend(redis_settings=RedisSettings()).worker_settings()
    delay = getattr(settings, "poll_delay", None)
    if not isinstance(delay, (int, float)) or isinstance(delay, bool) or delay <= 0:
        raise RuntimeError(
            f"cannot read PacificPy's ARQ poll delay (worker_settings().poll_delay = {delay!r});"
            " arq-tuned needs it"
        )
    return float(delay)


# --------------------------------------------------------------------------- producers


def _sender(contender: str) -> tuple[bool, Callable[[dict[str, Any]], Any], Callable[[], Any]]:
    """(is_async, send(payload), close()) for ``contender``, in this process."""
    url = os.environ["BENCH_REDIS_URL"]
    if contender == "redis-lpush":
        import orjson
        import redis

        r = redis.Redis.from_url(url)
        return False, lambda p: r.lpush("bench:lpush", orjson.dumps(p)), r.close
    if contender == "arq":
        from arq import create_pool
        from arq.connections import RedisSettings

        state: dict[str, Any] = {}

        async def send_arq(p: dict[str, Any]) -> Any:
            pool = state.get("pool")
            if pool is None:
                pool = state["pool"] = await create_pool(RedisSettings.from_dsn(url))
            return await pool.enqueue_job("job", p)

        async def close_arq() -> None:
            if "pool" in state:
                await state["pool"].aclose()

        return True, send_arq, close_arq
    if contender == "pacificpy-arq":
        from bench.workers import pp_arq, pp_tasks

        async def send_pp_arq(p: dict[str, Any]) -> Any:
            return await pp_tasks.ajob.delay(p)

        async def close_pp_arq() -> None:
            await pp_arq.backend.shutdown()

        return True, send_pp_arq, close_pp_arq
    if contender == "celery":
        from bench.workers import celery_raw

        return False, lambda p: celery_raw.job.apply_async((p,)), lambda: None
    if contender == "pacificpy-celery":
        from bench.workers import pp_celery, pp_tasks

        def close_pp_celery_sync() -> None:
            stop = getattr(pp_celery.backend, "shutdown_sync", None)
            if stop is not None:
                stop(timeout=5)

        return False, pp_tasks.job.delay, close_pp_celery_sync
    if contender == "pacificpy-celery-async":
        from bench.workers import pp_celery, pp_tasks

        async def send_pp_celery(p: dict[str, Any]) -> Any:
            return await pp_tasks.job.delay(p)

        async def close_pp_celery() -> None:
            await pp_celery.backend.shutdown()

        return True, send_pp_celery, close_pp_celery
    if contender == "rq":
        import redis
        from rq import Queue

        from bench.workers import rq_peer

        q = Queue("default", connection=redis.Redis.from_url(url))
        return False, lambda p: q.enqueue(rq_peer.job, p), lambda: None
    if contender == "dramatiq":
        from bench.workers import dramatiq_peer

        return False, dramatiq_peer.job.send, lambda: None
    raise SystemExit(f"unknown contender {contender}")


def _info(r: Any) -> tuple[int, int]:
    info = r.info()
    return int(info["total_commands_processed"]), int(info["used_memory"])


def _measure_loop(n: int) -> tuple[list[dict[str, Any]], list[float]]:
    return [{"n": n, "i": i, "email": PAYLOAD_EMAIL} for i in range(n)], []


def _finish(out: dict[str, Any], lat: list[float], n: int, wall: float) -> dict[str, Any]:
    lat.sort()
    out.update(jobs_s=n / wall, p50_us=percentile(lat, 50) * 1e6, p99_us=percentile(lat, 99) * 1e6)
    return out


def _drive_sync(send: Callable[[dict[str, Any]], Any], n: int, mode: str) -> dict[str, Any]:
    import redis

    r = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    out: dict[str, Any] = {"n": n}
    if mode == "enqueue":
        for i in range(50):  # connect and warm up, outside the measure
            send({"n": 0, "i": i, "email": PAYLOAD_EMAIL})
        cmds0, mem0 = _info(r)
    payloads, lat = _measure_loop(n)
    t_start = time.perf_counter()
    for p in payloads:
        t0 = time.perf_counter()
        send(p)
        lat.append(time.perf_counter() - t0)
    wall = time.perf_counter() - t_start
    if mode == "enqueue":
        cmds1, mem1 = _info(r)
        out["cmds_per_job"] = (cmds1 - cmds0 - 1) / n  # minus the first INFO itself
        out["bytes_per_job"] = (mem1 - mem0) / n
    r.close()
    return _finish(out, lat, n, wall)


async def _drive_async(send: Callable[[dict[str, Any]], Any], n: int, mode: str) -> dict[str, Any]:
    import redis

    r = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    out: dict[str, Any] = {"n": n}
    if mode == "enqueue":
        for i in range(50):
            await send({"n": 0, "i": i, "email": PAYLOAD_EMAIL})
        cmds0, mem0 = _info(r)  # a blocking call, outside the measure
    payloads, lat = _measure_loop(n)
    t_start = time.perf_counter()
    for p in payloads:
        t0 = time.perf_counter()
        await send(p)
        lat.append(time.perf_counter() - t0)
    wall = time.perf_counter() - t_start
    if mode == "enqueue":
        cmds1, mem1 = _info(r)
        out["cmds_per_job"] = (cmds1 - cmds0 - 1) / n
        out["bytes_per_job"] = (mem1 - mem0) / n
    r.close()
    return _finish(out, lat, n, wall)


def _pickup_sync(send: Callable[[dict[str, Any]], Any], samples: int, warmup: int) -> list[float]:
    import redis

    r = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    lat = []
    for i in range(samples + warmup):
        r.delete("bench:pickup")
        send({"p": 1, "i": i, "email": PAYLOAD_EMAIL})
        returned = time.time()
        got = r.blpop(["bench:pickup"], timeout=60 if i == 0 else 10)
        if got is None:
            raise RuntimeError(f"probe {i} was not picked up")
        if i >= warmup:
            lat.append(float(got[1]) - returned)
        # De-correlate from the worker's poll cycle (a measurement spacing, not a sync).
        time.sleep(random.uniform(0.0, 0.02))
    r.close()
    return lat


async def _pickup_async(
    send: Callable[[dict[str, Any]], Any], samples: int, warmup: int
) -> list[float]:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    lat = []
    for i in range(samples + warmup):
        await r.delete("bench:pickup")
        await send({"p": 1, "i": i, "email": PAYLOAD_EMAIL})
        returned = time.time()
        got = await r.blpop(["bench:pickup"], timeout=60 if i == 0 else 10)
        if got is None:
            raise RuntimeError(f"probe {i} was not picked up")
        if i >= warmup:
            lat.append(float(got[1]) - returned)
        await asyncio.sleep(random.uniform(0.0, 0.02))
    await r.aclose()
    return lat


def child(mode: str, contender: str, n: int) -> dict[str, Any]:
    """Run one producer in this process: sync clients with no loop, async ones on uvloop."""
    import uvloop

    is_async, send, close = _sender(contender)
    if is_async:

        async def main() -> Any:
            try:
                if mode == "pickup":
                    return await _pickup_async(send, n, 3)
                return await _drive_async(send, n, mode)
            finally:
                await close()

        result = uvloop.run(main())
    else:
        try:
            result = _pickup_sync(send, n, 3) if mode == "pickup" else _drive_sync(send, n, mode)
        finally:
            close()
    if mode == "pickup":
        from bench.local_exec import pickup_summary

        return pickup_summary(result)
    return result


# --------------------------------------------------------------------------- parent


def _env(url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    return child_env(BENCH_REDIS_URL=url, BENCH_ARQ_POLL=str(arq_poll_default()), **(extra or {}))


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-1200:]
    except OSError:
        return ""


def redis_benchmark(server: RedisServer, clients: int, n: int) -> dict[str, Any]:
    """``redis-benchmark -t lpush`` against the private server."""
    if shutil.which("redis-benchmark") is None:
        raise RuntimeError("redis-benchmark is not on PATH")
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(server.port), "-t", "lpush",
           "-n", str(n), "-c", str(clients), "-q"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    m = re.search(r"LPUSH: ([\d.]+) requests per second(?:, p50=([\d.]+) msec)?", out)
    if not m:
        raise RuntimeError(f"cannot parse redis-benchmark output: {out[-300:]}")
    return {"n": n, "jobs_s": float(m.group(1)),
            "p50_us": float(m.group(2)) * 1000 if m.group(2) else None}  # fmt: skip


def run_enqueue(server: RedisServer, opts: Options, stamp: str) -> list[dict[str, Any]]:
    """Scenario 3a: enqueue throughput."""
    n = 1000 if opts.quick else 5000
    names = [c for c in ENQUEUE if opts.wanted(f"enqueue:{c}")]
    bench_rows = [("redis-benchmark-c1", 1), ("redis-benchmark", 50)]
    names += [b for b, _ in bench_rows if opts.wanted(f"enqueue:{b}")]
    records = []
    for rnd in range(1, opts.rounds + 1):
        for name in rotate(names, rnd - 1):
            rec: dict[str, Any] = {"scenario": "enqueue", "contender": name, "round": rnd,
                                   "run": stamp, "ok": False}  # fmt: skip
            server.client().flushall()
            try:
                with watched(rec, 0.3 if opts.quick else 0.5):
                    if name.startswith("redis-benchmark"):
                        clients = dict(bench_rows)[name]
                        rec.update(redis_benchmark(server, clients, 10_000 if opts.quick
                                                   else 50_000))  # fmt: skip
                    else:
                        rec.update(run_child(["bench.redis_queues", "enqueue", name, str(n)],
                                             timeout=180, env=_env(server.url)))  # fmt: skip
                rec["ok"] = True
            except Exception as exc:
                rec["error"] = str(exc)[-1500:]
            result = f"{rec['jobs_s']:.0f} jobs/s" if rec["ok"] else f"FAILED {rec['error'][-300:]}"
            log("enqueue r%d %-24s %s", rnd, name, result)
            records.append(rec)
            write_jsonl(RAW / f"enqueue-{stamp}.jsonl", [rec])
    return records


def _start_worker(name: str, url: str, logdir: Path) -> tuple[subprocess.Popen[bytes], float]:
    _, cmd, extra, _ = E2E[name]
    if name == "rq-simple":
        cmd = [*cmd[:2], "--url", url, *cmd[2:]]
    logf = (logdir / f"{name}.log").open("wb")
    spawned = time.time()
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT,
                            env=_env(url, extra), start_new_session=True)  # fmt: skip
    logf.close()
    return proc, spawned


def _stop_worker(proc: subprocess.Popen[bytes]) -> None:
    # Workers like dramatiq fork children: signal the whole session we started.
    try:
        os.killpg(proc.pid, 15)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)
    terminate(proc)


def e2e_one(name: str, server: RedisServer, n: int, opts: Options) -> dict[str, Any]:
    """Fill, then one worker drains: one record."""
    producer, _, _, what = E2E[name]
    rec: dict[str, Any] = {"scenario": "e2e", "contender": name, "what": what, "n": n,
                           "ok": False}  # fmt: skip
    r = server.client()
    r.flushall()
    logdir = Path(tempfile.mkdtemp(prefix="pacificpy-bench-e2e-"))
    proc = None
    try:
        fill = run_child(["bench.redis_queues", "fill", producer, str(n)], timeout=180,
                         env=_env(server.url))  # fmt: skip
        rec["enqueue_jobs_s"] = fill["jobs_s"]
        with watched(rec, 0.3 if opts.quick else 0.5):
            proc, spawned = _start_worker(name, server.url, logdir)
            budget = 30 + n / 50
            got = r.blpop(["bench:done"], timeout=int(budget))
        if got is None:
            done = int(r.get("bench:count") or 0)
            raise RuntimeError(f"only {done}/{n} jobs done in {budget:.0f}s; worker log: "
                               f"{_tail(logdir / f'{name}.log')}")  # fmt: skip
        t1, tn = float(r.get("bench:t1")), float(r.get("bench:tN"))
        rec.update(jobs_s=(n - 1) / (tn - t1) if tn > t1 else None, startup_s=t1 - spawned,
                   total_s=tn - spawned)  # fmt: skip
        rec["us_per_job"] = 1e6 / rec["jobs_s"] if rec["jobs_s"] else None
        rec["ok"] = rec["jobs_s"] is not None
    except Exception as exc:
        rec["error"] = str(exc)[-1500:]
    finally:
        if proc is not None:
            _stop_worker(proc)
        shutil.rmtree(logdir, ignore_errors=True)
    return rec


def run_e2e(server: RedisServer, opts: Options, stamp: str) -> list[dict[str, Any]]:
    """Scenario 3b: end to end, one worker."""
    n = 400 if opts.quick else 2000
    names = [c for c in E2E if opts.wanted(f"e2e:{c}")]
    records = []
    for rnd in range(1, opts.rounds + 1):
        for name in rotate(names, rnd - 1):
            rec = e2e_one(name, server, n, opts)
            rec.update(round=rnd, run=stamp)
            log("e2e r%d %-18s %s", rnd, name,
                f"{rec['jobs_s']:.0f} jobs/s, startup {rec['startup_s']:.2f}s" if rec["ok"]
                else f"FAILED {rec['error'][-300:]}")  # fmt: skip
            records.append(rec)
            write_jsonl(RAW / f"e2e-{stamp}.jsonl", [rec])
    return records


def pickup_one(name: str, server: RedisServer, samples: int, opts: Options) -> dict[str, Any]:
    """One idle worker, ``samples`` probes one at a time."""
    producer = E2E[name][0]
    rec: dict[str, Any] = {"scenario": "pickup-redis", "contender": name, "ok": False}
    server.client().flushall()
    logdir = Path(tempfile.mkdtemp(prefix="pacificpy-bench-pickup-"))
    proc = None
    try:
        proc, _ = _start_worker(name, server.url, logdir)
        with watched(rec, 0.3 if opts.quick else 0.5):
            rec.update(run_child(["bench.redis_queues", "pickup", producer, str(samples)],
                                 timeout=120 + samples * 1.0, env=_env(server.url)))  # fmt: skip
        rec["ok"] = True
    except Exception as exc:
        rec["error"] = f"{str(exc)[-800:]} worker log: {_tail(logdir / f'{name}.log')}"
    finally:
        if proc is not None:
            _stop_worker(proc)
        shutil.rmtree(logdir, ignore_errors=True)
    return rec


def run_pickup(server: RedisServer, opts: Options, stamp: str) -> list[dict[str, Any]]:
    """Scenario 5, Redis part."""
    records = []
    names = [c for c in PICKUP if opts.wanted(f"pickup-redis:{c}")]
    for rnd in range(1, opts.rounds + 1):
        for name in rotate(names, rnd - 1):
            slow = name == "arq-default"  # 0.5 s poll: ~0.25 s per probe
            samples = (10 if slow else 40) if opts.quick else (30 if slow else 200)
            rec = pickup_one(name, server, samples, opts)
            rec.update(round=rnd, run=stamp)
            log("pickup r%d %-18s %s", rnd, name,
                f"p50 {rec['p50_ms']:.2f} ms p99 {rec['p99_ms']:.2f} ms" if rec["ok"]
                else f"FAILED {rec['error'][-300:]}")  # fmt: skip
            records.append(rec)
            write_jsonl(RAW / f"pickup-redis-{stamp}.jsonl", [rec])
    return records


def main() -> None:
    """``python -m bench.redis_queues enqueue|fill|pickup CONTENDER N`` (env BENCH_REDIS_URL)."""
    mode, contender, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps(child(mode, contender, n)))


if __name__ == "__main__":
    main()
