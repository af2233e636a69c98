"""Shared plumbing: CPU watch, run records, medians, a private redis-server, subprocesses."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
RAW = RESULTS / "raw"
PY = sys.executable
BIN = Path(sys.executable).parent

#: A run is "disturbed" when programs outside the bench used more CPU than this, in % of
#: one core, just before or during it (the peers' harness left out runs past ~10%).
DISTURBED_PCT = 10.0

# --------------------------------------------------------------------------- options


@dataclass
class Options:
    """What the command line asked for."""

    rounds: int = 3
    quick: bool = False
    tag: str = ""
    only: list[str] = field(default_factory=list)

    def wanted(self, name: str) -> bool:
        """True when ``name`` is selected (no ``--only``: everything is)."""
        return not self.only or any(o in name for o in self.only)


# --------------------------------------------------------------------------- CPU watch


def _busy_seconds() -> float:
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    return sum(t) - idle


def _our_seconds() -> float:
    """CPU seconds used by this process, its reaped children and its live descendants."""
    me = psutil.Process()
    t = me.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            ct = child.cpu_times()
            total += ct.user + ct.system
    return total


class CpuWatch:
    """CPU used by *other* programs (not this bench and its children) over a window."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.busy0 = _busy_seconds()
        self.ours0 = _our_seconds()

    def stop(self) -> dict[str, float]:
        """Return ``other_cpu_pct`` and ``bench_cpu_pct`` (100 = one core) since start."""
        wall = max(time.monotonic() - self.t0, 1e-6)
        busy = _busy_seconds() - self.busy0
        ours = _our_seconds() - self.ours0
        return {
            "other_cpu_pct": round(max(busy - ours, 0.0) / wall * 100, 1),
            "bench_cpu_pct": round(ours / wall * 100, 1),
            "wall_s": round(wall, 3),
        }


def other_cpu_before(seconds: float) -> float:
    """Other programs' CPU (% of one core) over a short idle window, before a run."""
    watch = CpuWatch()
    time.sleep(seconds)  # a measurement window, not synchronisation
    return watch.stop()["other_cpu_pct"]


@contextlib.contextmanager
def watched(record: dict[str, Any], before_s: float) -> Iterator[None]:
    """Fill ``record`` with load average and other-CPU% just before and during the block."""
    record["load1"] = round(os.getloadavg()[0], 2)
    record["other_cpu_before"] = other_cpu_before(before_s)
    watch = CpuWatch()
    try:
        yield
    finally:
        usage = watch.stop()
        record["other_cpu_during"] = usage["other_cpu_pct"]
        record["bench_cpu_pct"] = usage["bench_cpu_pct"]
        record["disturbed"] = (
            record["other_cpu_during"] > DISTURBED_PCT or record["other_cpu_before"] > DISTURBED_PCT
        )


# --------------------------------------------------------------------------- records


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def scrub(text: str) -> str:
    """``text`` with this machine's paths made relative (results are committed)."""
    for prefix, label in (
        (str(ROOT) + os.sep, ""),
        (sysconfig_stdlib() + os.sep, "<stdlib>/"),
        (str(Path(sys.prefix)) + os.sep, "<venv>/"),
    ):
        text = text.replace(prefix, label)
    return text


def sysconfig_stdlib() -> str:
    """The standard library's directory."""
    import sysconfig

    return str(Path(sysconfig.get_paths()["stdlib"]))


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append ``records`` to ``path``, one JSON object a line (machine paths scrubbed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        for rec in records:
            fh.write(scrub(json.dumps(rec, sort_keys=True)) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL file (missing file: none)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def rotate(items: Sequence[Any], k: int) -> list[Any]:
    """``items`` rotated by ``k``: each round starts with a different contender."""
    if not items:
        return []
    k %= len(items)
    return list(items[k:]) + list(items[:k])


def summarize(values: Sequence[float]) -> dict[str, float] | None:
    """Median, min and max of ``values`` (None when empty)."""
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` percentile (0..100) of already sorted values, nearest rank."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def usable(runs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """The successful runs to take medians over: undisturbed ones if any.

    Returns the runs and whether they are all disturbed (so the figure is flagged).
    """
    ok = [r for r in runs if r.get("ok")]
    calm = [r for r in ok if not r.get("disturbed")]
    if calm:
        return calm, False
    return ok, bool(ok)


# --------------------------------------------------------------------------- versions


PACKAGES = (
    "pacificpy",
    "starlette",
    "fastapi",
    "pydantic",
    "uvicorn",
    "uvloop",
    "httptools",
    "h11",
    "orjson",
    "celery",
    "kombu",
    "arq",
    "redis",
    "hiredis",
    "rq",
    "dramatiq",
    "psutil",
    "matplotlib",
)


def _tool_version(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return "missing"
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"error: {exc}"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "?"


def environment() -> dict[str, Any]:
    """Python, package and tool versions and the machine's shape, for the report."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "missing"
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(terse=True),
        "packages": versions,
        "redis_server": _tool_version(["redis-server", "--version"]),
        # wrk prints its version on an unknown option and exits non-zero.
        "wrk": _tool_version(["wrk", "-v"]),
    }


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (never 6379)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != 6379:
            return port


def wait_port(port: int, deadline: float, proc: subprocess.Popen[Any] | None = None) -> None:
    """Poll until 127.0.0.1:``port`` accepts connections.

    Raises:
        RuntimeError: the process exited or ``deadline`` (monotonic) passed first.
    """
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on port {port} in time")
        time.sleep(0.02)


def terminate(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM ``proc`` (then SIGKILL after ``timeout``) and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=5)


def child_env(**extra: str) -> dict[str, str]:
    """The environment for subprocesses: the project root importable, quiet warnings."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONWARNINGS", "ignore")
    env.update(extra)
    return env


def run_child(args: list[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python -m bench.<args>`` and parse the JSON object on its last stdout line.

    Raises:
        RuntimeError: the child failed, timed out or printed no JSON.
    """
    try:
        out = subprocess.run(
            [PY, "-m", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env or child_env(),
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{' '.join(args)} timed out after {timeout}s") from exc
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr or out.stdout).strip()[-1500:]
        raise RuntimeError(f"{' '.join(args)} failed ({out.returncode}): {tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


class RedisServer:
    """A private ``redis-server`` (no persistence) on a free port of 127.0.0.1."""

    def __init__(self) -> None:
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="pacificpy-bench-redis-"))

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start it and wait until it accepts connections.

        Raises:
            RuntimeError: no ``redis-server`` on PATH, or it did not come up.
        """
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
        self.port = free_port()
        log = (self.dir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log.close()
        wait_port(self.port, time.monotonic() + 20, self.proc)
        return self

    def client(self) -> Any:
        """A redis-py client of database 0."""
        import redis

        return redis.Redis(port=self.port, host="127.0.0.1")

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        if self.proc is not None:
            terminate(self.proc)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


def log(msg: str, *args: Any) -> None:
    """Progress line on stderr (the bench's own console output)."""
    sys.stderr.write((msg % args if args else msg) + "\n")
    sys.stderr.flush()
