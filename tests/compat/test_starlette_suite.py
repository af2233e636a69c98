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


def test_starlette_suite_passes_with_pacificpy_as_starlette(tmp_path: Path) -> None:
    version = starlette_suite.installed_version()
    try:
        sdist = starlette_suite.fetch_sdist(version)
    except starlette_suite.SuiteUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"cannot fetch Starlette's test suite: {exc}")
        pytest.skip(f"cannot fetch Starlette's test suite: {exc}")
    result = starlette_suite.check(starlette_suite.extract_suite(sdist, tmp_path), version)
    print(result.summary())
    assert not result.other, "Starlette tests that fail with PacificPy only:\n" + result.summary()
    assert not result.stale, "expected failures that did not fail (drop them):\n" + result.summary()
    assert len(result.outcomes) > 1000, "Starlette's suite ran far fewer tests than it holds"
