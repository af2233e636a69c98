"""``pacificpy worker``: picks the configured backend's worker.

The real ARQ run (processes, supervision, signals) is tested with subprocesses in
tests/background/backends/test_arq_backend.py and test_arq_faults.py.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pacificpy.background.backends.arq_backend import ARQBackgroundBackend
from pacificpy.cli import cli

LOCAL_APP = """
from pacificpy import PacificPy
from pacificpy.background.decorators import background

app = PacificPy()

@background
def cli_worker_local_task() -> None:
    pass
"""

ARQ_APP = """
from arq.connections import RedisSettings
from pacificpy.background.backend import ARQBackgroundBackend
from pacificpy.background.decorators import configure_background_tasks

backend = ARQBackgroundBackend(redis_settings=RedisSettings(host="127.0.0.1", port=1))
configure_background_tasks(backend)
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "cli_worker_local.py").write_text(LOCAL_APP)
    (tmp_path / "cli_worker_arq.py").write_text(ARQ_APP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    for name in ("cli_worker_local", "cli_worker_arq"):
        sys.modules.pop(name, None)


def test_local_executor_has_no_worker(project: Path) -> None:
    result = CliRunner().invoke(cli, ["worker", "cli_worker_local"])
    assert result.exit_code == 2
    assert "local executor" in result.output
    assert "inside the application process" in result.output


def test_unknown_module(project: Path) -> None:
    result = CliRunner().invoke(cli, ["worker", "no_such_module_here"])
    assert result.exit_code == 1
    assert "could not import module" in result.output


def test_arq_worker_gets_workers_and_queues(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def run_worker(self: ARQBackgroundBackend, **kwargs: Any) -> int:
        calls.append(kwargs)
        return 0

    monkeypatch.setattr(ARQBackgroundBackend, "run_worker", run_worker)
    result = CliRunner().invoke(
        cli, ["worker", "cli_worker_arq:app", "--workers", "4", "--queues", "emails, reports"]
    )
    assert result.exit_code == 0, result.output
    assert calls == [
        {
            "module": "cli_worker_arq",
            "workers": 4,
            "queues": ["emails", "reports"],
            "log_level": "info",
            "loglevel": "INFO",
        }
    ]


def test_celery_style_run_worker_gets_what_it_accepts(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    def run_worker(
        self: ARQBackgroundBackend, *, workers: int | None = None, loglevel: str = "INFO"
    ) -> int:
        calls.append({"workers": workers, "loglevel": loglevel})
        return 3

    monkeypatch.setattr(ARQBackgroundBackend, "run_worker", run_worker)
    result = CliRunner().invoke(cli, ["worker", "cli_worker_arq", "--log-level", "debug"])
    assert result.exit_code == 3
    assert calls == [{"workers": None, "loglevel": "DEBUG"}]


def test_workers_must_be_positive(project: Path) -> None:
    result = CliRunner().invoke(cli, ["worker", "cli_worker_arq", "--workers", "0"])
    assert result.exit_code == 2
