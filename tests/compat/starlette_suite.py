"""Run Starlette's own test suite with ``PacificPy`` as a plain rename of ``Starlette``.

The source distribution of the installed Starlette version is fetched with
``pip download`` (cached under ``.cache/starlette-compat/`` at the repository root,
which git ignores), its ``tests/`` run in a subprocess with the
:mod:`tests.compat.starlette_rename` plugin, and the failures are compared with
``starlette_expected_failures.txt`` beside this module: each test with the intended
difference it asserts, as ``docs/web.md`` lists them. A failure outside that list is
rerun on plain Starlette: if it fails there too it is this machine's, not PacificPy's
(Starlette's permission test run as root, say), and is reported apart.

By hand, from the repository root::

    python -m tests.compat.starlette_suite
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tarfile
from collections import Counter
from importlib import metadata
from pathlib import Path

import pacificpy

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / ".cache" / "starlette-compat"
PLUGIN_DIR = Path(__file__).resolve().parent
EXPECTED_FILE = PLUGIN_DIR / "starlette_expected_failures.txt"
#: The intended differences an expected failure may name (docs/web.md explains each).
REASONS = {
    "json-errors": "error responses are JSON, not plain text",
    "errors-answered": "an unhandled exception is answered with a 500, not re-raised",
    "body-limit": "request bodies are limited to 1 MiB by default",
    "trio": "the app refuses to start its lifespan under trio",
}
DOWNLOAD_TIMEOUT = 240.0
SUITE_TIMEOUT = 240.0


class SuiteUnavailable(RuntimeError):
    """Starlette's source distribution could not be fetched or unpacked."""


@dataclasses.dataclass
class Result:
    """The outcome of one compatibility run, by test node id."""

    version: str
    outcomes: dict[str, str]
    expected_failed: list[str]
    environment: list[str]  # fail on plain Starlette too, on this machine
    other: list[str]  # fail with PacificPy only, and are not intended differences
    stale: list[str]  # listed as expected failures, but passed or were not run
    reasons: dict[str, str]  # the reason of each expected failure

    def summary(self) -> str:
        counts = Counter(self.outcomes.values())
        reasons = Counter(self.reasons.values())
        lines = [
            f"Starlette {self.version} suite with PacificPy as Starlette: "
            f"{counts['passed']} passed, {len(self.expected_failed)} expected-failed, "
            f"{len(self.other)} other failures, {len(self.environment)} failing on plain "
            f"Starlette too, {counts['skipped']} skipped or xfailed by Starlette, "
            f"{len(self.stale)} stale list entries",
        ]
        lines += [f"  expected ({key}): {n}  {REASONS[key]}" for key, n in sorted(reasons.items())]
        lines += [f"  OTHER FAILURE: {n}" for n in self.other]
        lines += [f"  fails on plain Starlette too: {n}" for n in self.environment]
        lines += [f"  STALE (not failing any more, or not run): {n}" for n in self.stale]
        return "\n".join(lines)


def expected_failures(path: Path = EXPECTED_FILE) -> dict[str, str]:
    """The expected failures, ``{node id: reason}``, from ``path``.

    Raises:
        ValueError: a line is not ``<node id> <reason>``, or names an unknown reason.
    """
    expected: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in REASONS:
            raise ValueError(f"{path.name}:{number}: want '<node id> <reason>', got {line!r}")
        expected[parts[0]] = parts[1]
    return expected


def installed_version() -> str:
    return metadata.version("starlette")


def fetch_sdist(version: str, cache: Path = CACHE_DIR) -> Path:
    """The path of ``starlette-<version>.tar.gz``, downloaded into ``cache`` if missing.

    Raises:
        SuiteUnavailable: ``pip download`` failed.
    """
    sdist = cache / f"starlette-{version}.tar.gz"
    if sdist.exists():
        return sdist
    cache.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        f"starlette=={version}",
        "-d",
        str(cache),
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise SuiteUnavailable(f"pip download starlette=={version} timed out") from exc
    if done.returncode != 0 or not sdist.exists():
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise SuiteUnavailable(
            f"pip download starlette=={version} failed ({done.returncode}): " + " | ".join(tail)
        )
    return sdist


def extract_suite(sdist: Path, dest: Path) -> Path:
    """Unpack the sdist's ``tests/`` and ``pyproject.toml`` (its pytest settings) only.

    Starlette's own package is left out, so the suite imports the installed Starlette,
    the one PacificPy is built on.
    """
    with tarfile.open(sdist) as tar:
        top = tar.getnames()[0].split("/")[0]
        members = [
            m
            for m in tar.getmembers()
            if m.name == f"{top}/pyproject.toml" or m.name.startswith(f"{top}/tests/")
        ]
        if not any(m.name.startswith(f"{top}/tests/") for m in members):
            raise SuiteUnavailable(f"{sdist.name} holds no tests/ directory")
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover - Python without extraction filters
            tar.extractall(dest, members=members)
    return dest / top


def run_suite(root: Path, *, rename: bool, node_ids: list[str] | None = None) -> dict[str, str]:
    """Run Starlette's tests under ``root``; return each test's outcome by node id."""
    report = root / f"outcomes-{'pacificpy' if rename else 'starlette'}.json"
    report.unlink(missing_ok=True)
    plugins = ["-p", "outcomes_report"] + (["-p", "starlette_rename"] if rename else [])
    command = [
        sys.executable,
        "-m",
        "pytest",
        *(node_ids or ["tests"]),
        "-q",
        "-p",
        "no:cacheprovider",
        # PacificPy's own test plugins, installed alongside, have no say here.
        "-p",
        "no:asyncio",
        *plugins,
    ]
    src = Path(pacificpy.__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PLUGIN_DIR), str(src), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env["PACIFICPY_COMPAT_REPORT"] = str(report)
    done = subprocess.run(
        command, cwd=root, env=env, capture_output=True, text=True, timeout=SUITE_TIMEOUT
    )
    if not report.exists():
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-30:])
        raise RuntimeError(f"Starlette's suite did not run (exit {done.returncode}):\n{tail}")
    outcomes: dict[str, str] = json.loads(report.read_text(encoding="utf-8"))
    return outcomes


def check(root: Path, version: str) -> Result:
    """Run the suite renamed, rerun unlisted failures on Starlette, and classify."""
    expected = expected_failures()
    outcomes = run_suite(root, rename=True)
    failed = sorted(n for n, outcome in outcomes.items() if outcome == "failed")
    unlisted = [n for n in failed if n not in expected]
    baseline = run_suite(root, rename=False, node_ids=unlisted) if unlisted else {}
    return Result(
        version=version,
        outcomes=outcomes,
        expected_failed=[n for n in failed if n in expected],
        environment=[n for n in unlisted if baseline.get(n) == "failed"],
        other=[n for n in unlisted if baseline.get(n) != "failed"],
        stale=sorted(n for n in expected if outcomes.get(n) != "failed"),
        reasons={n: expected[n] for n in failed if n in expected},
    )


def main() -> int:
    import tempfile

    version = installed_version()
    with tempfile.TemporaryDirectory(prefix="starlette-compat-") as tmp:
        result = check(extract_suite(fetch_sdist(version), Path(tmp)), version)
    print(result.summary())
    return 1 if result.other or result.stale else 0


if __name__ == "__main__":
    sys.exit(main())
