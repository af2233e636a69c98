"""Celery on RabbitMQ: PacificPy's backend against raw Celery with the same settings.

``python -m bench rabbit [--rounds N] [--quick]`` (or ``python -m bench.rabbit_queues run``).
Needs the machine's RabbitMQ (``BENCH_RABBIT`` = ``host:port``, default 127.0.0.1:5672,
guest/guest) and ``rabbitmqctl``: every run gets a virtual host of its own, deleted after.
A private ``redis-server`` holds the jobs' counters and PacificPy's state.

Same settings on both sides: acks late, reject on worker lost, prefetch multiplier 1,
publisher confirms (PacificPy's defaults on RabbitMQ, set by hand on raw Celery), one
``celery worker --pool prefork --concurrency 1``, no result backend (PacificPy writes its
own outcome to Redis after each job: that write is part of what it pays). Not the solo
pool: on RabbitMQ with acks late and prefetch 1, Celery 5.6's solo (and threads) pool
takes about one message every 2 s whoever defines the task (measured: raw Celery ran 15
jobs in 12 s), so it would measure that stall, not the task layer.

- ``enqueue``: N jobs, one client, one at a time, each call returning once RabbitMQ
  confirmed it: raw ``apply_async`` vs PacificPy's ``.delay()`` (sync, and awaited on
  uvloop).
- ``e2e``: fill the queue with N jobs, then start ONE worker; jobs/s = (N-1) / (last job
  done - first job done). Raw Celery twice: without a result backend, and with its Redis
  result backend (``celery-rabbit-alo-results``: the same work as PacificPy, which stores
  every outcome).

Rounds alternate the order; ratios (PacificPy / raw) are taken within each round and their
median reported. On a machine other programs load, runs minutes apart see different loads,
so each round also measures **paired**: ``enqueue-paired`` alternates blocks of 50 calls of
raw Celery and PacificPy in one process; ``e2e-paired`` runs both workers at once, each
draining its own queue (vhost) and counting in its own Redis database. Both sides see the
same load; the paired ratios are the ones to read. Results: ``bench/results/rabbit.json``
and a table on stderr.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench._common import (
    RAW,
    ROOT,
    Options,
    RedisServer,
    child_env,
    log,
    rotate,
    run_child,
    watched,
    write_jsonl,
)
from bench.redis_queues import _stop_worker

CELERY = str(Path(sys.executable).with_name("celery"))

#: contender -> (producer, worker module or None)
ENQUEUE = {
    "celery-rabbit": "celery",
    "pacificpy-celery-rabbit": "pacificpy",
    "pacificpy-celery-rabbit-async": "pacificpy-async",
}
#: contender -> (producer, worker module, extra environment)
E2E: dict[str, tuple[str, str, dict[str, str]]] = {
    "celery-rabbit-alo": ("celery", "bench.workers.celery_rabbit_raw", {}),
    "celery-rabbit-alo-results": (
        "celery",
        "bench.workers.celery_rabbit_raw",
        {"BENCH_CELERY_RESULTS": "1"},
    ),
    "pacificpy-celery-rabbit": ("pacificpy", "bench.workers.pp_celery_rabbit", {}),
}
#: (what, PacificPy contender, raw contender)
RATIOS = [
    ("enqueue", "pacificpy-celery-rabbit", "celery-rabbit"),
    ("enqueue", "pacificpy-celery-rabbit-async", "celery-rabbit"),
    ("e2e", "pacificpy-celery-rabbit", "celery-rabbit-alo"),
    ("e2e", "pacificpy-celery-rabbit", "celery-rabbit-alo-results"),
]


# --------------------------------------------------------------------------- vhosts
class Vhost:
    """A RabbitMQ virtual host of one run (``rabbitmqctl``), deleted on exit."""

    def __init__(self) -> None:
        self.name = f"pacificpy-bench-{uuid.uuid4().hex[:10]}"
        self.address = os.environ.get("BENCH_RABBIT", "127.0.0.1:5672")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.address}/{self.name}"

    def _ctl(self, *args: str) -> None:
        subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)

    def __enter__(self) -> Vhost:
        self._ctl("add_vhost", self.name)
        self._ctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        return self

    def __exit__(self, *exc: object) -> None:
        self._ctl("delete_vhost", self.name)


# --------------------------------------------------------------------------- producers
def _sender(producer: str) -> tuple[bool, Any, Any]:
    """(is_async, send(payload), close()) for ``producer``, in this process."""
    if producer == "celery":
        from bench.workers import celery_rabbit_raw

        return False, lambda p: celery_rabbit_raw.job.apply_async((p,)), lambda: None
    from bench.workers import pp_celery_rabbit, pp_tasks

    backend = pp_celery_rabbit.backend
    if producer == "pacificpy":
        return False, pp_tasks.job.delay, lambda: backend.shutdown_sync(timeout=5)

    async def send(p: dict[str, Any]) -> Any:
        return await pp_tasks.job.delay(p)

    async def close() -> None:
        await backend.shutdown()

    return True, send, close


def paired_enqueue(n: int, block: int = 50) -> dict[str, Any]:
    """Raw ``apply_async`` and PacificPy's ``.delay()`` in ONE process, alternating blocks of
    ``block`` calls, so both see the same machine load; jobs/s of each and their ratio."""
    _, raw_send, raw_close = _sender("celery")
    _, pp_send, pp_close = _sender("pacificpy")
    spent = {"celery": 0.0, "pacificpy": 0.0}
    sends = {"celery": raw_send, "pacificpy": pp_send}
    for send in sends.values():  # connect and warm up, outside the measure
        for i in range(50):
            send({"n": 0, "i": i, "email": "user@example.com"})
    for start in range(0, n, block):
        order = ("celery", "pacificpy") if (start // block) % 2 == 0 else ("pacificpy", "celery")
        for name in order:
            send = sends[name]
            t0 = time.perf_counter()
            for i in range(start, min(n, start + block)):
                send({"n": n, "i": i, "email": "user@example.com"})
            spent[name] += time.perf_counter() - t0
    raw_close()
    pp_close()
    out = {f"{k}_jobs_s": n / v for k, v in spent.items()}
    out["ratio"] = spent["celery"] / spent["pacificpy"]
    out["n"] = n
    return out


def child(mode: str, producer: str, n: int) -> dict[str, Any]:
    """One producer run in this process (``enqueue`` measures; ``fill`` only fills)."""
    import uvloop

    from bench.redis_queues import _drive_async, _drive_sync

    if mode == "paired":
        return paired_enqueue(n)
    is_async, send, close = _sender(producer)
    if is_async:

        async def main() -> Any:
            try:
                return await _drive_async(send, n, mode)
            finally:
                await close()

        return dict(uvloop.run(main()))
    try:
        return _drive_sync(send, n, mode)
    finally:
        close()


# --------------------------------------------------------------------------- parent
def _env(redis_url: str, rabbit_url: str) -> dict[str, str]:
    return child_env(BENCH_REDIS_URL=redis_url, BENCH_RABBIT_URL=rabbit_url)


def enqueue_one(name: str, server: RedisServer, n: int, opts: Options) -> dict[str, Any]:
    rec: dict[str, Any] = {"scenario": "rabbit-enqueue", "contender": name, "ok": False}
    server.client().flushall()
    try:
        with Vhost() as vhost, watched(rec, 0.3 if opts.quick else 0.5):
            args = ["bench.rabbit_queues", "enqueue", ENQUEUE[name], str(n)]
            rec.update(run_child(args, timeout=300, env=_env(server.url, vhost.url)))
        rec["ok"] = True
    except Exception as exc:
        rec["error"] = str(exc)[-1500:]
    return rec


def e2e_one(name: str, server: RedisServer, n: int, opts: Options) -> dict[str, Any]:
    producer, module, extra = E2E[name]
    rec: dict[str, Any] = {"scenario": "rabbit-e2e", "contender": name, "n": n, "ok": False}
    r = server.client()
    r.flushall()
    logdir = Path(tempfile.mkdtemp(prefix="pacificpy-bench-rabbit-"))
    proc = None
    try:
        with Vhost() as vhost:
            env = {**_env(server.url, vhost.url), **extra}
            fill = run_child(["bench.rabbit_queues", "fill", producer, str(n)], 300, env)
            rec["enqueue_jobs_s"] = fill["jobs_s"]
            with watched(rec, 0.3 if opts.quick else 0.5):
                with (logdir / "worker.log").open("wb") as logf:
                    spawned = time.time()
                    proc = subprocess.Popen(
                        [CELERY, "-A", module, "worker", "--pool", "prefork", "--concurrency", "1",
                         "--without-gossip", "--without-mingle",
                         "--loglevel", "WARNING"],
                        stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                        start_new_session=True,
                    )  # fmt: skip
                budget = 30 + n / 50
                got = r.blpop(["bench:done"], timeout=int(budget))
            if got is None:
                done = int(r.get("bench:count") or 0)
                tail = (logdir / "worker.log").read_text(errors="replace")[-1200:]
                raise RuntimeError(f"only {done}/{n} jobs done in {budget:.0f}s: {tail}")
            t1, tn = float(r.get("bench:t1")), float(r.get("bench:tN"))
            rec.update(jobs_s=(n - 1) / (tn - t1), startup_s=t1 - spawned, ok=True)
            _stop_worker(proc)
            proc = None
    except Exception as exc:
        rec["error"] = str(exc)[-1500:]
    finally:
        if proc is not None:
            _stop_worker(proc)
        shutil.rmtree(logdir, ignore_errors=True)
    return rec


def paired_e2e(server: RedisServer, n: int, opts: Options, peer: str) -> dict[str, Any]:
    """Both workers at once, each draining its own filled queue (its own vhost and Redis
    database), so both see the same machine load; jobs/s of each and their ratio. ``peer``
    is the raw Celery contender (with or without a result backend)."""
    rec: dict[str, Any] = {"scenario": f"rabbit-e2e-paired:{peer}", "n": n, "ok": False}
    sides = {"celery": (peer, 0), "pacificpy": ("pacificpy-celery-rabbit", 1)}
    server.client().flushall()
    logdir = Path(tempfile.mkdtemp(prefix="pacificpy-bench-rabbit-"))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        with Vhost() as v0, Vhost() as v1:
            vhosts = (v0, v1)
            envs = {}
            for side, (name, db) in sides.items():
                producer, _, extra = E2E[name]
                url = server.url.rpartition("/")[0] + f"/{db}"
                envs[side] = {**_env(url, vhosts[db].url), **extra}
                run_child(["bench.rabbit_queues", "fill", producer, str(n)], 300, envs[side])
            with watched(rec, 0.3 if opts.quick else 0.5):
                for side, (name, _) in sides.items():
                    procs[side] = _spawn(E2E[name][1], envs[side], logdir / f"{side}.log")
                for side, (_, db) in sides.items():
                    r = _db(server, db)
                    if r.blpop(["bench:done"], timeout=int(60 + n / 20)) is None:
                        raise RuntimeError(f"{side}: only {r.get('bench:count')}/{n} done")
            for side, (_, db) in sides.items():
                r = _db(server, db)
                t1, tn = float(r.get("bench:t1")), float(r.get("bench:tN"))
                rec[f"{side}_jobs_s"] = (n - 1) / (tn - t1)
            rec["ratio"] = rec["pacificpy_jobs_s"] / rec["celery_jobs_s"]
            rec["ok"] = True
    except Exception as exc:
        rec["error"] = str(exc)[-1500:]
    finally:
        for proc in procs.values():
            _stop_worker(proc)
        shutil.rmtree(logdir, ignore_errors=True)
    return rec


def _db(server: RedisServer, db: int) -> Any:
    import redis

    return redis.Redis(host="127.0.0.1", port=server.port, db=db)


def _spawn(module: str, env: dict[str, str], logpath: Path) -> subprocess.Popen[bytes]:
    with logpath.open("wb") as logf:
        return subprocess.Popen(
            [CELERY, "-A", module, "worker", "--pool", "prefork", "--concurrency", "1",
             "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
            stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True,
        )  # fmt: skip


def _same_round(peer: dict[str, Any], rec: dict[str, Any], contender: str) -> bool:
    return (
        peer["scenario"] == rec["scenario"]
        and peer["contender"] == contender
        and peer["round"] == rec["round"]
    )


def _ratios(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per round PacificPy / raw, then the median over rounds (undisturbed rounds first)."""
    rows = []
    for scenario, mine, raw in RATIOS:
        per_round = []
        disturbed = []
        for rec in records:
            if rec["scenario"] != f"rabbit-{scenario}" or rec["contender"] != mine:
                continue
            peer = next((p for p in records if _same_round(p, rec, raw)), None)
            if peer and rec.get("ok") and peer.get("ok"):
                ratio = rec["jobs_s"] / peer["jobs_s"]
                noisy = rec.get("disturbed") or peer.get("disturbed")
                (disturbed if noisy else per_round).append(ratio)
        values = per_round or disturbed
        rows.append({
            "what": scenario, "pacificpy": mine, "raw": raw,
            "ratio_median": statistics.median(values) if values else None,
            "ratios": [round(v, 3) for v in per_round + disturbed],
            "only_disturbed_runs": not per_round and bool(disturbed),
        })  # fmt: skip
    return rows


def run(opts: Options, stamp: str) -> dict[str, Any]:
    """Every round: each enqueue contender, then each e2e contender, order rotated."""
    n_enqueue = 500 if opts.quick else 3000
    n_e2e = 300 if opts.quick else 2000
    records: list[dict[str, Any]] = []
    server = RedisServer().start()
    try:
        for rnd in range(1, opts.rounds + 1):
            for name in rotate([c for c in ENQUEUE if opts.wanted(f"enqueue:{c}")], rnd - 1):
                rec = enqueue_one(name, server, n_enqueue, opts)
                rec.update(round=rnd, run=stamp)
                log("rabbit enqueue r%d %-30s %s", rnd, name, _shown(rec))
                records.append(rec)
            for name in rotate([c for c in E2E if opts.wanted(f"e2e:{c}")], rnd - 1):
                rec = e2e_one(name, server, n_e2e, opts)
                rec.update(round=rnd, run=stamp)
                log("rabbit e2e     r%d %-30s %s", rnd, name, _shown(rec))
                records.append(rec)
            if opts.wanted("paired"):
                records.extend(_paired_round(server, rnd, stamp, n_enqueue, n_e2e, opts))
    finally:
        server.stop()
    write_jsonl(RAW / f"rabbit-{stamp}.jsonl", records)
    summary = {"run": stamp, "rounds": opts.rounds, "quick": opts.quick,
               "ratios": _ratios(records), "paired": _paired_ratios(records),
               "records": records}  # fmt: skip
    for what, row in summary["paired"].items():
        log("paired %-34s PacificPy / raw Celery: median %s (rounds: %s)", what,
            f"{row['median']:.2f}x" if row["median"] else "n/a", row["ratios"])  # fmt: skip
    (RAW.parent / "rabbit.json").write_text(json.dumps(summary, indent=2) + "\n")
    for row in summary["ratios"]:
        median = row["ratio_median"]
        log("%-8s %-30s / %-24s %s  (rounds: %s)", row["what"], row["pacificpy"], row["raw"],
            f"{median:.2f}x" if median else "n/a", row["ratios"])  # fmt: skip
    return summary


def _paired_round(
    server: RedisServer, rnd: int, stamp: str, n_enqueue: int, n_e2e: int, opts: Options
) -> list[dict[str, Any]]:
    """One round of the paired measures (enqueue interleaved, e2e simultaneous)."""
    rec: dict[str, Any] = {"scenario": "rabbit-enqueue-paired", "ok": False}
    try:
        with Vhost() as vhost, watched(rec, 0.3 if opts.quick else 0.5):
            args = ["bench.rabbit_queues", "paired", "-", str(n_enqueue)]
            rec.update(run_child(args, timeout=600, env=_env(server.url, vhost.url)))
        rec["ok"] = True
    except Exception as exc:
        rec["error"] = str(exc)[-1500:]
    peers = ("celery-rabbit-alo", "celery-rabbit-alo-results")
    out = []
    for r in (rec, *(paired_e2e(server, n_e2e, opts, peer) for peer in peers)):
        r.update(round=rnd, run=stamp)
        shown = f"ratio {r['ratio']:.2f}x" if r["ok"] else f"FAILED {r.get('error', '')[-300:]}"
        log("rabbit %-42s r%d %s", r["scenario"], rnd, shown)
        out.append(r)
    return out


def _paired_ratios(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    rows = {}
    names = {
        "enqueue": "rabbit-enqueue-paired",
        "e2e vs celery-rabbit-alo": "rabbit-e2e-paired:celery-rabbit-alo",
        "e2e vs celery-rabbit-alo-results": "rabbit-e2e-paired:celery-rabbit-alo-results",
    }
    for what, scenario in names.items():
        ratios = [r["ratio"] for r in records if r["scenario"] == scenario and r["ok"]]
        rows[what] = {
            "median": statistics.median(ratios) if ratios else None,
            "ratios": [round(v, 3) for v in ratios],
        }
    return rows


def _shown(rec: dict[str, Any]) -> str:
    if not rec["ok"]:
        return f"FAILED {rec.get('error', '')[-300:]}"
    extra = " (disturbed)" if rec.get("disturbed") else ""
    return f"{rec['jobs_s']:.0f} jobs/s{extra}"


def main() -> None:
    """``python -m bench.rabbit_queues enqueue|fill PRODUCER N`` (a producer child), or
    ``python -m bench.rabbit_queues run [--rounds N] [--quick]``."""
    if sys.argv[1] == "run":
        from bench.__main__ import main as bench_main

        sys.exit(bench_main(["rabbit", *sys.argv[2:]]))
    mode, producer, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps(child(mode, producer, n)))


if __name__ == "__main__":
    main()
