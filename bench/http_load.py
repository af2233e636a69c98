"""Scenario 1, HTTP: POST + one background task under uvicorn (1 worker), load from wrk.

Server pinned to CPU 0 and wrk to CPU 1 (``taskset``) when there are two CPUs or more.
Every contender runs in every round, in a rotated order; ``x raw`` is computed per round
against the raw ASGI app on the same server stack. Without ``wrk`` on PATH an async httpx
client (``python -m bench.http_load --client``) generates the load instead (noted in each
record as ``loadgen``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import (
    BENCH,
    PY,
    RAW,
    ROOT,
    Options,
    child_env,
    free_port,
    log,
    rotate,
    terminate,
    wait_port,
    watched,
    write_jsonl,
)

BODY = b'{"user_id": 42, "email": "user@example.com"}'

#: (name, ASGI app, stack). Stack "uvloop" = --loop uvloop --http httptools (the default
#: of app.run() and pacificpy run); "h11" = --loop asyncio --http h11.
CONTENDERS: list[tuple[str, str, str]] = [
    (name, target, stack)
    for stack in ("uvloop", "h11")
    for name, target in (
        ("raw-asgi", "bench.apps.raw:app"),
        ("starlette-bg", "bench.apps.starlette_bg:app"),
        ("fastapi-bg", "bench.apps.fastapi_bg:app"),
        ("pacificpy", "bench.apps.pacificpy_bg:app"),
    )
] + [
    ("starlette-bg-sync", "bench.apps.starlette_bg:app_sync", "uvloop"),
    ("fastapi-bg-sync", "bench.apps.fastapi_bg:app_sync", "uvloop"),
    ("pacificpy-sync", "bench.apps.pacificpy_bg:app_sync", "uvloop"),
]

STACKS = {"uvloop": ["--loop", "uvloop", "--http", "httptools"],
          "h11": ["--loop", "asyncio", "--http", "h11"]}  # fmt: skip


def _pin(cpu: int) -> list[str]:
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(cpu)]
    return []


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    """req/s, p50/p99 latency (ms) and error counts from ``wrk --latency`` output."""
    res: dict[str, Any] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else None
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        res[f"p{pct}_ms"] = _ms(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = res["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(g) for g in m.groups())
    res["errors"] = errors
    return res


def _load(port: int, duration: float, conns: int, threads: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/"
    if shutil.which("wrk"):
        cmd = [*_pin(1), "wrk", f"-t{threads}", f"-c{conns}", f"-d{duration:g}s", "--latency",
               "-s", str(BENCH / "wrk_post.lua"), url]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30)
        res = parse_wrk(out.stdout)
        res["loadgen"] = "wrk"
        if res["rps"] is None:
            raise RuntimeError(f"wrk failed: {out.stdout[-500:]} {out.stderr[-500:]}")
        return res
    cmd = [*_pin(1), PY, "-m", "bench.http_load", "--client", url, str(duration), str(conns)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30,
                         env=child_env(), cwd=ROOT)  # fmt: skip
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["loadgen"] = "httpx"
    return res


def run_one(name: str, target: str, stack: str, opts: Options, rnd: int) -> dict[str, Any]:
    """Serve ``target`` with uvicorn, warm up, measure; one record."""
    duration = 3.0 if opts.quick else 10.0
    warmup = 1.0 if opts.quick else 2.0
    rec: dict[str, Any] = {"scenario": "http", "contender": name, "stack": stack, "round": rnd,
                           "target": target, "duration_s": duration, "ok": False}  # fmt: skip
    port = free_port()
    logdir = Path(tempfile.mkdtemp(prefix="pacificpy-bench-http-"))
    logf = (logdir / "server.log").open("wb")
    counts = logdir / "task-counts.json"
    cmd = [*_pin(0), PY, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", *STACKS[stack], "--no-access-log",
           "--log-level", "warning"]  # fmt: skip
    env = child_env(BENCH_TASK_COUNT_FILE=str(counts))
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    answered = 0
    try:
        wait_port(port, time.monotonic() + 30, proc)
        warm = _load(port, warmup, 64, 2)
        with watched(rec, 0.3 if opts.quick else 0.5):
            rec.update(_load(port, duration, 64, 2))
        rec["errors"] = rec.get("errors", 0) + warm.get("errors", 0)
        rec["non_2xx"] = rec.get("non_2xx", 0) + warm.get("non_2xx", 0)
        answered = (warm.get("requests") or 0) + (rec.get("requests") or 0) - rec["errors"]
        rec["ok"] = rec.get("rps") is not None and rec["errors"] == 0
        if rec["errors"]:
            rec["error"] = f"{rec['errors']} failed requests"
    except Exception as exc:
        rec["error"] = str(exc)
    finally:
        terminate(proc, timeout=90)  # PacificPy's shutdown hook waits for its tasks first
        logf.close()
        tail = (logdir / "server.log").read_text(errors="replace")[-800:]
        if rec["ok"] and name.startswith("pacificpy"):
            _check_tasks(rec, counts, answered)
        if not rec["ok"] and tail:
            rec["server_log"] = tail
        shutil.rmtree(logdir, ignore_errors=True)
    return rec


def _check_tasks(rec: dict[str, Any], counts: Path, answered: int) -> None:
    """Fail the record unless every task PacificPy accepted ran before the server stopped.

    ``answered`` is the 2xx responses wrk saw (warm-up included); the app may have enqueued a
    few more for requests still in flight when wrk stopped, never fewer.
    """
    if not counts.is_file():
        rec["ok"] = False
        rec["error"] = "the server stopped without reporting its task counts"
        return
    got = json.loads(counts.read_text())
    rec["tasks_enqueued"], rec["tasks_ran"] = got["enqueued"], got["ran"]
    if got["ran"] != got["enqueued"] or not got["drained"]:
        rec["ok"] = False
        rec["error"] = f"{got['enqueued'] - got['ran']} of {got['enqueued']} tasks never ran"
    elif got["enqueued"] < answered:
        rec["ok"] = False
        rec["error"] = f"{answered} requests answered 2xx but only {got['enqueued']} enqueued"


def run(opts: Options, stamp: str) -> list[dict[str, Any]]:
    """Every HTTP contender, ``opts.rounds`` rounds, alternating."""
    contenders = [c for c in CONTENDERS if opts.wanted(f"http:{c[0]}@{c[2]}")]
    records: list[dict[str, Any]] = []
    for rnd in range(1, opts.rounds + 1):
        for name, target, stack in rotate(contenders, rnd - 1):
            rec = run_one(name, target, stack, opts, rnd)
            rec["run"] = stamp
            result = f"{rec['rps']:.0f} req/s" if rec.get("ok") else f"FAILED {rec.get('error')}"
            log("http r%d %-18s %-6s %s", rnd, name, stack, result)
            records.append(rec)
            write_jsonl(RAW / f"http-{stamp}.jsonl", [rec])
    return records


# --------------------------------------------------------------------------- httpx fallback


async def _client(url: str, duration: float, conns: int) -> dict[str, Any]:
    import httpx

    lat: list[float] = []
    errors = non_2xx = 0
    stop = time.monotonic() + duration
    limits = httpx.Limits(max_connections=conns, max_keepalive_connections=conns)
    async with httpx.AsyncClient(limits=limits) as client:

        async def worker() -> None:
            nonlocal errors, non_2xx
            headers = {"content-type": "application/json"}
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    r = await client.post(url, content=BODY, headers=headers)
                    if r.status_code != 200:
                        errors += 1
                        non_2xx += 1
                except Exception:
                    errors += 1
                lat.append((time.perf_counter() - t0) * 1000)

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(conns)))
        wall = time.monotonic() - t0
    lat.sort()
    from bench._common import percentile

    return {"rps": len(lat) / wall, "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
            "requests": len(lat), "errors": errors, "non_2xx": non_2xx}  # fmt: skip


def main() -> None:
    """``--client URL DURATION CONNS``: the httpx load generator used when wrk is missing."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--client", nargs=3, metavar=("URL", "DURATION", "CONNS"), required=True)
    ns = parser.parse_args()
    url, duration, conns = ns.client
    print(json.dumps(asyncio.run(_client(url, float(duration), int(conns)))))


if __name__ == "__main__":
    main()
