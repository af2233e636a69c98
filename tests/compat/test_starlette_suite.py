"""Starlette's own test suite passes with PacificPy in place of Starlette.

Outside the intended differences listed in ``starlette_expected_failures.txt`` (and
documented in ``docs/web.md``), every test of the installed Starlette version's suite
must pass with ``Starlette`` renamed to ``PacificPy``. See :mod:`tests.compat.starlette_suite`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.compat import starlette_suite

pytestmark = [pytest.mark.compat, pytest.mark.timeout(600)]


def test_expected_failures_name_known_reasons_and_each_test_once() -> None:
    expected = starlette_suite.expected_failures()
    assert expected, "the list is empty: the check would compare against nothing"
    lines = [
        line.split()[0]
        for line in starlette_suite.EXPECTED_FILE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(lines) == len(set(lines)), "a test is listed twice"
    assert set(expected.values()) <= set(starlette_suite.REASONS)


def test_docs_list_every_intended_difference() -> None:
    web = (starlette_suite.REPO_ROOT / "docs" / "web.md").read_text(encoding="utf-8")
    section = web.split("## Coming from Starlette (and FastAPI)", 1)[1].split("\n## ", 1)[0]
    # One row per difference the expected failures may name.
    for phrase in ("errors answer JSON", "not re-raised", "limited to 1 MiB", "under trio"):
        assert phrase in section, phrase


def suite_sdist(version: str, cache: Path = starlette_suite.CACHE_DIR) -> Path:
    """Starlette's sdist; a failed download fails the test in CI and skips it elsewhere."""
    try:
        return starlette_suite.fetch_sdist(version, cache)
    except starlette_suite.SuiteUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"cannot fetch Starlette's test suite: {exc}")
        pytest.skip(f"cannot fetch Starlette's test suite: {exc}")


def test_failed_download_fails_in_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No index and a version that was never released: pip fails at once, offline.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="cannot fetch Starlette's test suite"):
        suite_sdist("0.0.1a0", tmp_path)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="cannot fetch Starlette's test suite"):
        suite_sdist("0.0.1a0", tmp_path)


def test_starlette_suite_passes_with_pacificpy_as_starlette(tmp_path: Path) -> None:
    version = starlette_suite.installed_version()
    sdist = suite_sdist(version)
    result = starlette_suite.check(starlette_suite.extract_suite(sdist, tmp_path), version)
    print(result.summary())
    other, stale = result.other, result.stale
    assert not other, "Starlette tests that fail with PacificPy only:\n" + result.summary()
    assert not stale, "expected failures that did not fail (drop them):\n" + result.summary()
    assert len(result.outcomes) > 1000, "Starlette's suite ran far fewer tests than it holds"
