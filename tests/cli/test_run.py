"""``pacificpy run``: loads the app and hands it to uvicorn with the chosen options."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pacificpy import PacificPy
from pacificpy.cli import cli
from pacificpy.cli._loading import LoadError, load_attr
from tests.support.served_command import assert_served_app_ran, enqueue_and_read, run_served

APP_SOURCE = """
from pacificpy import PacificPy

app = PacificPy()
other = PacificPy()
not_an_app = 42
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory holding ``cli_demo_app.py``, made the working directory."""
    (tmp_path / "cli_demo_app.py").write_text(APP_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    sys.modules.pop("cli_demo_app", None)


@pytest.fixture
def uvicorn_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, dict[str, Any]]]:
    import uvicorn

    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    return calls


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_run_serves_the_loaded_app_with_defaults(
    project: Path, uvicorn_calls: list[tuple[Any, dict[str, Any]]]
) -> None:
    result = invoke("run", "cli_demo_app:app")
    assert result.exit_code == 0, result.output
    ((app, options),) = uvicorn_calls
    assert app is sys.modules["cli_demo_app"].app
    assert isinstance(app, PacificPy)
    assert options == {
        "host": "127.0.0.1",
        "port": 8000,
        "reload": False,
        "loop": "uvloop",
        "http": "httptools",
    }


def test_run_defaults_the_attribute_to_app(
    project: Path, uvicorn_calls: list[tuple[Any, dict[str, Any]]]
) -> None:
    assert invoke("run", "cli_demo_app").exit_code == 0
    assert uvicorn_calls[0][0] is sys.modules["cli_demo_app"].app


def test_run_passes_host_port_loop_http(
    project: Path, uvicorn_calls: list[tuple[Any, dict[str, Any]]]
) -> None:
    result = invoke(
        "run",
        "cli_demo_app:other",
        "--host",
        "0.0.0.0",
        "--port",
        "9009",
        "--loop",
        "asyncio",
        "--http",
        "h11",
        "--log-level",
        "warning",
    )
    assert result.exit_code == 0, result.output
    ((app, options),) = uvicorn_calls
    assert app is sys.modules["cli_demo_app"].other
    assert options == {
        "host": "0.0.0.0",
        "port": 9009,
        "reload": False,
        "loop": "asyncio",
        "http": "h11",
        "log_level": "warning",
    }


def test_reload_and_workers_pass_the_import_string(
    project: Path, uvicorn_calls: list[tuple[Any, dict[str, Any]]]
) -> None:
    assert invoke("run", "cli_demo_app", "--reload").exit_code == 0
    assert invoke("run", "cli_demo_app:other", "--workers", "3").exit_code == 0
    assert invoke("run", "cli_demo_app:other", "--workers", "1").exit_code == 0
    (reload_app, reload_options), (workers_app, workers_options), (one_app, _) = uvicorn_calls
    assert reload_app == "cli_demo_app:app"
    assert reload_options["reload"] is True
    assert workers_app == "cli_demo_app:other"
    assert workers_options["workers"] == 3
    assert one_app is sys.modules["cli_demo_app"].other


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz:app", "could not import module 'no_such_module_xyz'"),
        ("cli_demo_app:missing", "has no attribute 'missing'"),
        ("cli_demo_app:not_an_app", "not an ASGI application"),
        (":app", "not an import string"),
    ],
)
def test_bad_import_string_is_a_clear_error(
    project: Path,
    uvicorn_calls: list[tuple[Any, dict[str, Any]]],
    spec: str,
    message: str,
) -> None:
    result = invoke("run", spec)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert uvicorn_calls == []


def test_load_attr_reports_missing_dependency_of_the_module(project: Path) -> None:
    (project / "cli_broken_app.py").write_text("import no_such_dependency_xyz\n")
    try:
        with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
            load_attr("cli_broken_app:app")
    finally:
        sys.modules.pop("cli_broken_app", None)


def test_load_attr_dotted_attribute_and_package(project: Path) -> None:
    package = project / "cli_demo_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "web.py").write_text("class Holder:\n    app = 'inner'\n")
    try:
        assert load_attr("cli_demo_pkg.web:Holder.app") == "inner"
        with pytest.raises(LoadError, match=r"could not import module 'cli_demo_pkg\.nope'"):
            load_attr("cli_demo_pkg.nope")
    finally:
        for name in ("cli_demo_pkg", "cli_demo_pkg.web"):
            sys.modules.pop(name, None)


def test_help_lists_run() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "run" in result.output
    assert "--reload" in invoke("run", "--help").output


def test_main_entry_point(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pacificpy.cli import main

    monkeypatch.setattr(sys, "argv", ["pacificpy", "--version"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0
    assert "pacificpy, version 0.1.0" in capsys.readouterr().out


# -- pacificpy run, for real ------------------------------------------------------------------
@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_pacificpy_run_serves_runs_tasks_and_stops_on_a_signal(
    tmp_path: Path, stop_with: signal.Signals
) -> None:
    # The console script `make test` installs, next to this interpreter.
    script = Path(sys.executable).with_name("pacificpy")
    assert script.is_file(), f"{script} is missing: install the package (make test does)"
    run = run_served(
        lambda port: [str(script), "run", "tests.apps.served_app:app", "--port", str(port)],
        enqueue_and_read,
        env={"PACIFICPY_TEST_DIR": str(tmp_path)},
        stop_with=stop_with,
    )
    assert_served_app_ran(run, stop_with, tmp_path)
