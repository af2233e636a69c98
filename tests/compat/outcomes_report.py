"""A pytest plugin that writes each test's outcome as JSON to ``PACIFICPY_COMPAT_REPORT``.

``{node id: "passed" | "failed" | "skipped"}``; a failing setup or teardown counts as
``failed``, an expected failure of the suite's own (``xfail``) as ``skipped``.
"""

from __future__ import annotations

import json
import os
from typing import Any

_outcomes: dict[str, str] = {}


def pytest_runtest_logreport(report: Any) -> None:
    if report.failed:
        _outcomes[report.nodeid] = "failed"
    elif report.when == "call" or (report.when == "setup" and report.skipped):
        _outcomes.setdefault(report.nodeid, "skipped" if report.skipped else "passed")


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    with open(os.environ["PACIFICPY_COMPAT_REPORT"], "w", encoding="utf-8") as fh:
        json.dump(_outcomes, fh, indent=0, sort_keys=True)
