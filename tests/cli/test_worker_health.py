"""``pacificpy worker --health-port``: the endpoints reach the backend's worker, and bad
input gets a clear error. Real workers answering them: tests/background/backends/
test_ops_workers.py."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pacificpy.background.backends.arq_backend import ARQBackgroundBackend
from pacificpy.background.workers import WorkerHealth
from pacificpy.cli import cli
from tests.support.health import get_json
from tests.support.net import free_port

ARQ_APP = """
from arq.connections import RedisSettings
from pacificpy.background.backend import ARQBackgroundBackend
from pacificpy.background.decorators import configure_background_tasks

configure_background_tasks(ARQBackgroundBackend(redis_settings=RedisSettings(port=1)))
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "cli_health_arq.py").write_text(ARQ_APP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    sys.modules.pop("cli_health_arq", None)


def test_health_endpoints_answer_what_the_worker_reports(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    seen: list[Any] = []

    def run_worker(self: ARQBackgroundBackend, *, health: WorkerHealth, **_: Any) -> int:
        seen.append(health.grace)
        seen.append(get_json(port, "/healthz/live"))
        seen.append(get_json(port, "/healthz/ready"))  # nothing reported yet: starting
        health.add("worker 0 (default)", lambda: (True, "backend reachable"))
        seen.append(get_json(port, "/healthz/ready"))
        health.add("worker 1 (default)", lambda: (False, "backend unreachable for 12.0s"))
        seen.append(get_json(port, "/healthz/ready"))
        seen.append(get_json(port, "/elsewhere")[0])
        return 0

    monkeypatch.setattr(ARQBackgroundBackend, "run_worker", run_worker)
    args = ["worker", "cli_health_arq", "--health-port", str(port), "--health-grace", "3"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    grace, live, starting, ready, not_ready, missing = seen
    assert grace == 3.0
    assert live == (200, {"status": "live"})
    assert starting[0] == 503
    assert starting[1] == {
        "status": "not ready",
        "checks": {"worker": {"ok": False, "detail": "starting"}},
    }
    assert ready[0] == 200 and ready[1]["status"] == "ready"
    assert not_ready[0] == 503
    assert not_ready[1]["checks"]["worker 1 (default)"] == {
        "ok": False, "detail": "backend unreachable for 12.0s"
    }  # fmt: skip
    assert missing == 404


def test_health_port_in_use_is_a_clear_error(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ARQBackgroundBackend, "run_worker", lambda self, **kw: 0)
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["worker", "cli_health_arq", "--health-port", str(port)])
    assert result.exit_code == 1
    assert f"cannot serve health checks on port {port}" in result.output


def test_a_worker_that_reports_no_health(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def run_worker(self: ARQBackgroundBackend, *, workers: int | None = None) -> int:
        return 0

    monkeypatch.setattr(ARQBackgroundBackend, "run_worker", run_worker)
    result = CliRunner().invoke(cli, ["worker", "cli_health_arq", "--health-port", "0"])
    assert result.exit_code == 2
    assert "does not report its health" in result.output


@pytest.mark.parametrize("bad", [["--health-port", "70000"], ["--health-grace", "0"]])
def test_bad_health_options(project: Path, bad: list[str]) -> None:
    result = CliRunner().invoke(cli, ["worker", "cli_health_arq", *bad])
    assert result.exit_code == 2
