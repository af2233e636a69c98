"""Periodic tasks across real processes (SPEC 10.3): each slot exactly once, no beat.

Three processes run ``tests.reliability.apps.schedule_app``'s 1 s schedule, each with its
own scheduler:

- Redis (ARQ, and Celery for ``missed="once"``): two uvicorn app processes and one
  ``pacificpy worker`` process (Celery: its main process schedules, two prefork children
  run the tasks);
- SQLite: two uvicorn app processes that only enqueue and one that also runs the tasks
  (the SQLite backend's workers live in its app processes).

Phase 1 runs them for at least 10 slots: every slot in the window ran once, none twice,
none skipped. Then every process is stopped for at least 3 slots and all are started
again: under ``missed="skip"`` no missed slot runs; under ``"once"`` exactly one does
(the newest), and the slots after the restart run once each again. The counts are
printed (``-s`` shows them).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.background.backends._arq_procs import PACIFICPY, Proc
from tests.support.net import free_port
from tests.support.redis_server import RedisServer, redis_server_binary
from tests.support.wait import wait_for

APP = "tests.reliability.apps.schedule_app"
WINDOW = 11  # slots of phase 1 (>= 10 s at 1 s)
DOWN = 3.5  # seconds every process is stopped (>= 3 slots)
AFTER = 5  # slots run after the restart
STARTED = "PacificPy scheduler running"

# Two phases of three processes each, on a machine that may be loaded: minutes, not seconds.
pytestmark = pytest.mark.timeout(420)


@pytest.fixture
def sched_redis() -> Iterator[RedisServer]:
    if redis_server_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed; `make test` installs it")
        pytest.skip("redis-server is not installed")
    with RedisServer() as server:
        yield server


class Rig:
    """The three processes of one backend, started and stopped together."""

    def __init__(self, kind: str, tmp: Path, env: dict[str, str]) -> None:
        self.kind, self.tmp, self.env = kind, tmp, env
        self.events = Path(env["PACIFICPY_SCHED_EVENTS"])
        self.runs = Path(env["PACIFICPY_SCHED_RUNS"])
        self.round = 0
        self.procs: list[Proc] = []

    def commands(self) -> list[tuple[list[str], dict[str, str]]]:
        def app(consume: str = "0") -> tuple[list[str], dict[str, str]]:
            cmd = [sys.executable, "-m", "uvicorn", f"{APP}:app", "--port", str(free_port())]
            return cmd, {"PACIFICPY_SCHED_CONSUME": consume}

        if self.kind == "arq":
            worker = [*PACIFICPY, "worker", APP, "--workers", "1"]
            return [app(), app(), (worker, {})]
        if self.kind == "celery":
            worker = [*PACIFICPY, "worker", APP, "--workers", "2"]
            return [app(), app(), (worker, {})]
        return [app(), app(), app(consume="1")]

    @contextmanager
    def running(self) -> Iterator[float]:
        """Start the three processes; yield when the earliest scheduler started, once all
        three have. Stops them all (SIGTERM, a graceful shutdown) when the block ends."""
        self.round += 1
        seen = len(self.started_at())
        procs = self.procs = []
        try:
            for i, (cmd, env) in enumerate(self.commands()):
                log = self.tmp / f"round{self.round}-p{i}.log"
                procs.append(Proc(cmd, log, {**self.env, **env}))
            wait_for(
                lambda: len(self.started_at()) >= seen + 3 or _dead(procs),
                90,
                what="three schedulers to start",
            )
            assert not _dead(procs), _logs(procs)
            yield min(self.started_at()[seen:])
        finally:
            for proc in procs:
                if proc.popen.poll() is None:
                    proc.popen.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.stop(timeout=30)

    def wait_for_slots(self, first: int, last: int, timeout: float) -> None:
        """Wait until every slot from ``first`` to ``last`` ran; say what is missing if not."""
        try:
            wait_for(lambda: _all_ran(self, first, last), timeout, what=f"slots {first}..{last}")
        except AssertionError as exc:
            ran = self.slots()
            missing = [s for s in range(first, last + 1) if not ran[float(s)]]
            runs = self.runs.read_text()[-2000:] if self.runs.exists() else ""
            events = self.events.read_text() if self.events.exists() else ""
            raise AssertionError(
                f"{exc}; missing {missing}, at {time.time():.3f}\nruns:\n{runs}\n"
                f"scheduler starts:\n{events}\n{_logs(self.procs)}"
            ) from None

    def started_at(self) -> list[float]:
        if not self.events.exists():
            return []
        lines = self.events.read_text().splitlines()
        return [float(line.split()[0]) for line in lines if STARTED in line]

    def slots(self) -> Counter[float]:
        if not self.runs.exists():
            return Counter()
        return Counter(float(line.split()[0]) for line in self.runs.read_text().splitlines())


def _dead(procs: list[Proc]) -> bool:
    return any(p.popen.poll() is not None for p in procs)


def _logs(procs: list[Proc]) -> str:
    return "\n".join(f"--- {p.log.name}\n{p.text()[-3000:]}" for p in procs)


def _all_ran(rig: Rig, first: float, last: float) -> bool:
    ran = rig.slots()
    return all(ran[float(s)] for s in range(int(first), int(last) + 1))


def _report(name: str, slots: range, ran: Counter[float]) -> dict[str, int]:
    counts = [ran[float(s)] for s in slots]
    figures = {
        "slots": len(counts),
        "once": counts.count(1),
        "twice_or_more": sum(1 for c in counts if c > 1),
        "skipped": counts.count(0),
    }
    print(f"\n{name}: {figures}")
    return figures


@pytest.mark.parametrize(
    ("kind", "missed"),
    [("arq", "skip"), ("arq", "once"), ("sqlite", "skip"), ("sqlite", "once"), ("celery", "once")],
)
def test_each_slot_once_across_processes_and_the_missed_policy(
    kind: str, missed: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = {
        "PACIFICPY_SCHED_BACKEND": kind,
        "PACIFICPY_SCHED_MISSED": missed,
        "PACIFICPY_SCHED_RUNS": str(tmp_path / "runs.txt"),
        "PACIFICPY_SCHED_EVENTS": str(tmp_path / "events.txt"),
        "PACIFICPY_SCHED_DB": str(tmp_path / "tasks.db"),
    }
    if kind in ("arq", "celery"):
        env["PACIFICPY_SCHED_REDIS"] = request.getfixturevalue("sched_redis").url
    rig = Rig(kind, tmp_path, env)

    # Phase 1: three processes, at least WINDOW slots.
    with ExitStack() as stack:
        up = stack.enter_context(rig.running())
        first1 = math.ceil(up)
        last1 = first1 + WINDOW - 1
        rig.wait_for_slots(first1, last1, WINDOW + 60)
    down = time.time()  # every process has exited

    # Every process down for DOWN seconds (the downtime under test, not a synchronisation).
    time.sleep(max(0.0, down + DOWN - time.time()))

    # Phase 2: all three again.
    with ExitStack() as stack:
        up2 = stack.enter_context(rig.running())
        first2 = math.ceil(up2)
        last2 = first2 + AFTER - 1
        rig.wait_for_slots(first2, last2, AFTER + 60)

    ran = rig.slots()
    window1 = _report(f"{kind}/{missed} phase 1", range(first1, last1 + 1), ran)
    assert window1 == {"slots": WINDOW, "once": WINDOW, "twice_or_more": 0, "skipped": 0}
    window2 = _report(f"{kind}/{missed} after restart", range(first2, last2 + 1), ran)
    assert window2 == {"slots": AFTER, "once": AFTER, "twice_or_more": 0, "skipped": 0}
    assert max(ran.values()) == 1, [s for s, n in ran.items() if n > 1]  # no slot twice, ever

    # Missed: no process ran a scheduler from `down` until the first restarted one began.
    missed_slots = range(math.ceil(down), math.floor(up2) + 1)
    caught_up = [s for s in missed_slots if ran[float(s)]]
    print(f"{kind}/{missed} missed slots: {len(missed_slots)}, runs for them: {caught_up}")
    assert len(missed_slots) >= 3
    if missed == "skip":
        assert caught_up == []
    else:
        assert caught_up == [missed_slots[-1]]  # one run, for the newest missed slot
