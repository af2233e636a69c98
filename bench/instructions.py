"""Instructions per request of the in-process ASGI scenario, counted by callgrind.

``python -m bench.instructions [CONTENDER ...] [--monitor off]``

Each contender of scenario 1b (bench/asgi_inproc.py: POST / driven straight into the
app, its background task run to completion) is run twice under ``valgrind
--tool=callgrind``, with 1,000 and 3,000 measured requests; the count per request is the
difference divided by 2,000, so start-up, imports and the warm-up cancel out. Unlike a
clock, an instruction count does not move when other programs load the machine, which
makes it the figure to compare two versions of the hot path by (not a speed: a cache
miss and a simple add count the same).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._common import PY, ROOT, child_env
from bench.asgi_inproc import CONTENDERS

_SMALL, _LARGE = 1000, 3000


def _count(contender: str, n: int, env: dict[str, str], out: Path) -> int:
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
           str(PY), "-m", "bench.asgi_inproc", contender, str(n)]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, timeout=1800)
    text = out.read_text(errors="replace")
    m = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
    if m is None:
        raise RuntimeError(f"no instruction total in {out}")
    return int(m.group(1))


def per_request(contender: str, monitor: str = "memory") -> float:
    """Instructions per request of ``contender`` (see the module docstring)."""
    env = child_env()
    if monitor == "off":
        env["BENCH_MONITOR"] = "off"
    with tempfile.TemporaryDirectory() as tmp:
        small = _count(contender, _SMALL, env, Path(tmp) / "small.out")
        large = _count(contender, _LARGE, env, Path(tmp) / "large.out")
    return (large - small) / (_LARGE - _SMALL)


def main(argv: list[str] | None = None) -> int:
    """Print instructions per request for each contender asked for (default: all)."""
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("contenders", nargs="*", default=list(CONTENDERS))
    parser.add_argument("--monitor", choices=["memory", "off"], default="memory",
                        help="PacificPy's task monitor (default: in memory)")  # fmt: skip
    ns = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 1
    for name in ns.contenders:
        if name not in CONTENDERS:
            parser.error(f"unknown contender {name!r}; one of {', '.join(CONTENDERS)}")
        count = per_request(name, ns.monitor)
        print(f"{name:16s} {count / 1000:8.1f}k instructions per request", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
