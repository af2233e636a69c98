"""Scenario 1b: the HTTP apps called in process (no server, no socket), on uvloop.

The same ``POST /`` as scenario 1, driven N times straight into the ASGI callable, with
the app's lifespan running; for PacificPy the clock stops when its background tasks have
all run too (Starlette's and FastAPI's run inside the request call). This isolates the
framework + task cost from uvicorn and wrk, so it is far less noisy than scenario 1 and
shows where the per-request time goes (``python -m bench asgi``; ``--profile`` in
``python -m bench.asgi_inproc CONTENDER N --profile`` prints a cProfile).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import os
import sys
import time
from typing import Any

from bench._common import RAW, Options, log, rotate, run_child, watched, write_jsonl

BODY = b'{"user_id": 42, "email": "user@example.com"}'

CONTENDERS = {
    "raw-asgi": "bench.apps.raw:app",
    "starlette-bg": "bench.apps.starlette_bg:app",
    "fastapi-bg": "bench.apps.fastapi_bg:app",
    "pacificpy": "bench.apps.pacificpy_bg:app",
    "pacificpy-sync": "bench.apps.pacificpy_bg:app_sync",
    "pacificpy-notask": "bench.apps.pacificpy_bg:app_notask",
}


def _scope() -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "method": "POST", "scheme": "http", "path": "/",
        "raw_path": b"/", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(BODY)).encode())],
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000), "state": {},
    }  # fmt: skip


async def _lifespan(app: Any) -> tuple[asyncio.Task[Any], asyncio.Queue[Any]]:
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    outbox: asyncio.Queue[Any] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    task = asyncio.ensure_future(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )
    msg = await asyncio.wait_for(outbox.get(), 10)
    if msg["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"lifespan startup failed: {msg}")
    return task, inbox


def _idle() -> bool:
    from pacificpy.background.decorators import get_backend

    backend: Any = get_backend()
    waiting = getattr(backend, "_waiting_total", 0)
    running = getattr(backend, "_running", {})
    return not waiting and not running


async def drive(target: str, n: int, profile: bool = False) -> dict[str, Any]:
    """Serve ``n`` requests to ``target`` in process; requests/s until the tasks ran."""
    module, attr = target.split(":")
    if "pacificpy" in target:
        # Driven in process, the requests outrun the worker threads by far more than the
        # default 10,000 waiting tasks (a server's socket paces them; this loop does not),
        # and QueueFull would end the run: a deeper queue keeps it a throughput figure.
        from pacificpy.background.decorators import configure_background_tasks
        from pacificpy.background.local import get_local_executor

        configure_background_tasks(get_local_executor(max_queue_size=1_000_000))
        if os.environ.get("BENCH_MONITOR") == "off":  # (bench.instructions --monitor off)
            from pacificpy.background.monitor import configure_task_monitor

            configure_task_monitor(enabled=False)
    app = getattr(importlib.import_module(module), attr)
    life, inbox = await _lifespan(app)
    statuses: dict[int, int] = {}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses[message["status"]] = statuses.get(message["status"], 0) + 1

    pp = "pacificpy" in target
    result: dict[str, Any] = {}
    for phase, count in (("warmup", 1000), ("measure", n)):
        gc.collect()
        prof = None
        if profile and phase == "measure":
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        t0 = time.perf_counter()
        c0 = time.process_time()
        for _ in range(count):
            await app(_scope(), receive, send)
            # A server yields to its loop between requests; without this no task could
            # run until the end, and the local executor's queue would fill (QueueFull).
            await asyncio.sleep(0)
        served = time.perf_counter() - t0
        if pp:
            deadline = time.monotonic() + 60
            while not _idle() and time.monotonic() < deadline:
                await asyncio.sleep(0)
        total = time.perf_counter() - t0
        cpu = time.process_time() - c0
        if prof is not None:
            prof.disable()
            import pstats

            pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(30)
        result = {"n": count, "rps": count / total, "us_per_req": total / count * 1e6,
                  "us_per_req_served": served / count * 1e6,
                  "cpu_us_per_req": cpu / count * 1e6}  # fmt: skip
    await inbox.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(life, 30)
    if set(statuses) != {200}:
        raise RuntimeError(f"unexpected statuses {statuses}")
    return result


def run(opts: Options, stamp: str) -> list[dict[str, Any]]:
    """Every contender, alternating, each in a fresh interpreter."""
    n = 5000 if opts.quick else 20000
    records = []
    names = [c for c in CONTENDERS if opts.wanted(f"asgi:{c}")]
    for rnd in range(1, opts.rounds + 1):
        for name in rotate(names, rnd - 1):
            rec: dict[str, Any] = {"scenario": "asgi", "contender": name, "round": rnd,
                                   "run": stamp, "ok": False}  # fmt: skip
            try:
                with watched(rec, 0.3 if opts.quick else 0.5):
                    rec.update(run_child(["bench.asgi_inproc", name, str(n)], 240))
                rec["ok"] = True
            except Exception as exc:
                rec["error"] = str(exc)
            log("asgi r%d %-16s %s", rnd, name,
                f"{rec['rps']:.0f} req/s ({rec['us_per_req']:.1f} µs/req)" if rec["ok"]
                else f"FAILED {rec.get('error')}")  # fmt: skip
            records.append(rec)
            write_jsonl(RAW / f"asgi-{stamp}.jsonl", [rec])
    return records


def main() -> None:
    """``python -m bench.asgi_inproc CONTENDER N [--profile]``."""
    import uvloop

    name, n = sys.argv[1], int(sys.argv[2])
    res = uvloop.run(drive(CONTENDERS[name], n, profile="--profile" in sys.argv))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
