"""Profile the local hot path: ``.delay()`` -> ``LocalExecutor.submit``, and the worker loop.

``python -m bench profile`` writes ``bench/results/profile-local.txt``:

1. the cost of each step of ``.delay()`` timed alone (µs per call), workers blocked;
2. cProfile of N ``.delay()`` calls (workers blocked, so only the producer side runs);
3. cProfile of the worker loop (``LocalExecutor._worker`` run in this thread over N
   queued messages), the sync path;
4. cProfile of N async ``.delay()`` calls and their runs on one event loop.

cProfile adds its own overhead per Python call, so read its figures as shares; the
step timings of part 1 are the absolute ones.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import cProfile
import gc
import io
import logging
import pstats
import time
from collections.abc import Callable
from typing import Any

from bench._common import RESULTS, log, scrub


def _per_call(fn: Callable[[], Any], n: int) -> float:
    gc.collect()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def _stats(prof: cProfile.Profile, n: int, top: int = 25) -> str:
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    st.sort_stats("tottime")
    rows = []
    for (file, line, func), (_cc, nc, tt, ct, _) in st.stats.items():  # type: ignore[attr-defined]
        rows.append((tt, ct, nc, f"{file.split('site-packages/')[-1].split('src/')[-1]}:{line}"
                     f"({func})"))  # fmt: skip
    rows.sort(reverse=True)
    lines = [f"{'tottime µs/task':>16} {'cumtime µs/task':>16} {'calls/task':>10}  function"]
    for tt, ct, nc, where in rows[:top]:
        lines.append(f"{tt / n * 1e6:16.2f} {ct / n * 1e6:16.2f} {nc / n:10.2f}  {where}")
    return "\n".join(lines)


def _submit_cost(ex: Any, name: str, n: int) -> float:
    from pacificpy.background import _codec
    from pacificpy.background.task import Message, TaskEnvelope, new_task_id

    msgs = []
    for _ in range(n):
        env = TaskEnvelope(new_task_id(), name, (), {}, "default", 1, time.time())
        msgs.append(Message(env, _codec.encode(env)))
    it = iter(msgs)
    return _per_call(lambda: ex.submit(next(it), None), n)


def steps(n: int) -> list[tuple[str, float]]:
    """µs per call of each step of ``.delay()`` of a sync no-op, workers blocked."""
    from bench import _local_tasks as t
    from pacificpy.background import _codec
    from pacificpy.background.decorators import configure_background_tasks, get_backend
    from pacificpy.background.local import get_local_executor
    from pacificpy.background.monitor import get_task_monitor
    from pacificpy.background.task import TaskEnvelope, new_task_id

    ex = get_local_executor(4, max_queue_size=10 * n + 1000)
    configure_background_tasks(ex)
    t.RELEASE.clear()
    for _ in range(4):
        t.block.delay()
    spec = t.noop_sync.spec
    env = TaskEnvelope(new_task_id(), spec.name, (), {}, "default", 1, time.time())
    monitor = get_task_monitor()
    pool = cf.ThreadPoolExecutor(4)
    for _ in range(4):
        pool.submit(t.RELEASE.wait, 120)
    out = [
        ("ThreadPoolExecutor.submit(noop) (reference)",
         _per_call(lambda: pool.submit(t.noop_fn), n)),
        ("noop.delay() total", _per_call(t.noop_sync.delay, n)),
        ("  spec.check_args((), {})", _per_call(lambda: spec.check_args((), {}), n)),
        ("  get_backend()", _per_call(get_backend, n)),
        ("  new_task_id()", _per_call(new_task_id, n)),
        ("  TaskEnvelope(...)", _per_call(
            lambda: TaskEnvelope(new_task_id(), spec.name, (), {}, "default", 1, time.time()), n)),
        ("  _codec.encode(env)", _per_call(lambda: _codec.encode(env), n)),
        ("  get_task_monitor().task_queued(env)", _per_call(lambda: monitor.task_queued(env), n)),
        ("  backend.submit(Message(env, data), None)", _submit_cost(ex, spec.name, n)),
    ]  # fmt: skip
    t.RELEASE.set()
    ex.shutdown_sync(timeout=30)
    pool.shutdown()
    return out


def profile_producer(n: int) -> str:
    """cProfile of ``n`` sync ``.delay()`` calls, workers blocked."""
    from bench import _local_tasks as t
    from pacificpy.background.decorators import configure_background_tasks
    from pacificpy.background.local import get_local_executor

    ex = get_local_executor(4, max_queue_size=n + 1000)
    configure_background_tasks(ex)
    t.RELEASE.clear()
    for _ in range(4):
        t.block.delay()
    for _ in range(200):
        t.noop_sync.delay()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        t.noop_sync.delay()
    prof.disable()
    t.RELEASE.set()
    ex.shutdown_sync(timeout=30)
    return _stats(prof, n)


def profile_worker(n: int) -> str:
    """cProfile of the sync worker loop over ``n`` queued messages, in this thread."""
    from bench import _local_tasks as t
    from pacificpy.background.decorators import configure_background_tasks
    from pacificpy.background.local import _STOP, get_local_executor

    ex = get_local_executor(4, max_queue_size=n + 1000)
    configure_background_tasks(ex)
    t.RELEASE.clear()
    for _ in range(4):
        t.block.delay()
    # The 4 pool threads are busy with blockers; wait until they took them.
    deadline = time.monotonic() + 10
    while ex.queue_length_sync() and time.monotonic() < deadline:
        time.sleep(0.01)
    for _ in range(n):
        t.noop_sync.delay()
    ex._work.put(_STOP)  # this thread's _worker() returns after the n messages
    t.COUNTER.reset(n)
    prof = cProfile.Profile()
    prof.enable()
    ex._worker()
    prof.disable()
    t.RELEASE.set()
    ex.shutdown_sync(timeout=30)
    return _stats(prof, n)


def profile_async(n: int) -> str:
    """cProfile of ``n`` async ``.delay()`` calls and their runs, on one uvloop."""
    import uvloop

    from bench import _local_tasks as t
    from pacificpy.background.decorators import configure_background_tasks
    from pacificpy.background.local import get_local_executor

    prof = cProfile.Profile()

    async def main() -> None:
        ex = get_local_executor(4, max_queue_size=n + 1000)
        configure_background_tasks(ex)
        await ex.startup()
        t.COUNTER.reset(n)
        t.COUNTER.adone = asyncio.Event()
        prof.enable()
        for _ in range(n):
            t.noop_async.delay()
        await t.COUNTER.adone.wait()
        prof.disable()
        await ex.shutdown()

    uvloop.run(main())
    return _stats(prof, n)


def main(quick: bool = False) -> None:
    """Write bench/results/profile-local.txt and echo it."""
    n = 5_000 if quick else 20_000
    logging.getLogger("pacificpy").setLevel(logging.CRITICAL)  # no per-task log lines here
    parts = ["# Local hot path profile (python -m bench profile)", ""]
    parts.append("## 1. Steps of noop.delay() (sync task, no loop, workers blocked), µs per call")
    parts.append("")
    for label, us in steps(n):
        parts.append(f"{us:8.2f}  {label}")
    parts += ["", f"## 2. cProfile, producer: {n} noop.delay() calls (per task)", "",
              profile_producer(n), "",
              f"## 3. cProfile, sync worker loop over {n} messages (per task)", "",
              profile_worker(n), "",
              f"## 4. cProfile, {n} async .delay() + runs on one uvloop (per task)", "",
              profile_async(n), ""]  # fmt: skip
    text = "\n".join(parts)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "profile-local.txt").write_text(scrub(text))
    log(text)
