"""``pacificpy tasks``: stats, list and the dead-letter commands, in-process and as a real
process reading the shared Redis monitor store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from pacificpy.background.decorators import get_backend
from pacificpy.background.monitor import get_task_monitor
from pacificpy.cli import cli
from pacificpy.cli._loading import load_module
from pacificpy.errors import TaskFailed
from tests.support.uvicorn_server import REPO_ROOT

pytestmark = pytest.mark.redis

APP_SOURCE = """
import os
from pacificpy import PacificPy
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import get_local_executor
from pacificpy.background.monitor import configure_task_monitor
from pacificpy.background.monitor.redis import RedisMonitorStore

app = PacificPy()
executor = get_local_executor(max_workers=2)
configure_background_tasks(executor)
configure_task_monitor(
    RedisMonitorStore(os.environ["CLI_TEST_REDIS"], prefix=os.environ["CLI_TEST_PREFIX"])
)

@background
def resize(path: str, secret_token: str = "") -> dict:
    return {"resized": path}

@background
def publish(post_id: int) -> None:
    raise RuntimeError("feed is down")

@background(name="cli.[bold]marked[/bold]")
def marked(text: str) -> None:
    raise RuntimeError(text)
"""


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One file for the whole module: re-importing it then re-registers the same functions.
    path = tmp_path_factory.mktemp("cli_tasks")
    (path / "cli_tasks_app.py").write_text(APP_SOURCE)
    return path


@pytest.fixture
def app_module(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> Iterator[ModuleType]:
    prefix = "cli" + uuid.uuid4().hex[:10]
    monkeypatch.chdir(project_dir)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("CLI_TEST_REDIS", redis_url)
    monkeypatch.setenv("CLI_TEST_PREFIX", prefix)
    sys.modules.pop("cli_tasks_app", None)
    module = load_module("cli_tasks_app")
    yield module
    module.executor.shutdown_sync(timeout=5)
    sys.modules.pop("cli_tasks_app", None)
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def run_tasks(module: ModuleType) -> tuple[str, str]:
    ok = module.resize.delay("/img/a.png", secret_token="hide-me")
    ok.result_sync(5)
    bad = module.publish.delay(7)
    with pytest.raises(TaskFailed):
        bad.result_sync(5)
    return ok.id, bad.id


def invoke(*args: str, input: str | None = None) -> Any:
    runner = CliRunner(env={"COLUMNS": "200"})
    return runner.invoke(cli, list(args), input=input, catch_exceptions=False)


def test_stats_and_list(app_module: ModuleType) -> None:
    ok_id, bad_id = run_tasks(app_module)
    result = invoke("tasks", "-A", "cli_tasks_app", "stats")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "local backend" in out and "Queues" in out and "default" in out
    assert "cli_tasks_app.resize" in out and "cli_tasks_app.publish" in out

    stats = json.loads(invoke("tasks", "-A", "cli_tasks_app", "stats", "--json").output)
    assert stats["counts"]["completed"] == 1 and stats["counts"]["failed"] == 1
    assert stats["queues"] == {"default": 0} and stats["backend"] == "local"

    listed = invoke("tasks", "--app", "cli_tasks_app:app", "list", "--status", "failed")
    assert listed.exit_code == 0
    assert bad_id in listed.output and "feed is down" in listed.output
    assert ok_id not in listed.output
    rows = json.loads(invoke("tasks", "-A", "cli_tasks_app", "list", "--json").output)
    assert {r["id"]: r["status"] for r in rows} == {ok_id: "completed", bad_id: "failed"}
    assert all("hide-me" not in (r["args_preview"] or "") for r in rows)
    named = invoke("tasks", "-A", "cli_tasks_app", "list", "--name", "cli_tasks_app.resize",
                   "--limit", "1", "--json")  # fmt: skip
    assert [r["id"] for r in json.loads(named.output)] == [ok_id]


def test_dlq_list_requeue_purge(app_module: ModuleType) -> None:
    _, bad_id = run_tasks(app_module)
    listed = invoke("tasks", "-A", "cli_tasks_app", "dlq", "list")
    assert listed.exit_code == 0 and "feed is down" in listed.output
    letters = json.loads(invoke("tasks", "-A", "cli_tasks_app", "dlq", "list", "--json").output)
    assert len(letters) == 1 and letters[0]["task_id"] == bad_id

    requeued = invoke("tasks", "-A", "cli_tasks_app", "dlq", "requeue", letters[0]["id"])
    assert requeued.exit_code == 0 and bad_id in requeued.output
    with pytest.raises(TaskFailed):  # it ran again (and failed again: the feed is still down)
        get_backend().wait_result_sync(bad_id, 5).unwrap(bad_id)
    assert get_task_monitor().get(bad_id).attempts == 1  # type: ignore[union-attr]

    missing = CliRunner().invoke(cli, ["tasks", "-A", "cli_tasks_app", "dlq", "requeue", "nope"])
    assert missing.exit_code == 1 and "no dead letter" in missing.output

    aborted = invoke("tasks", "-A", "cli_tasks_app", "dlq", "purge", input="n\n")
    assert aborted.exit_code == 1
    assert len(get_backend().dead_letters_sync()) == 1
    purged = invoke("tasks", "-A", "cli_tasks_app", "dlq", "purge", "--yes")
    assert purged.exit_code == 0 and "purged 1" in purged.output
    assert get_backend().dead_letters_sync() == []


def test_another_process_reads_the_shared_monitor(app_module: ModuleType) -> None:
    ok_id, bad_id = run_tasks(app_module)
    get_task_monitor().flush()
    proc = subprocess.run(
        [sys.executable, "-c", "from pacificpy.cli import main; main()",
         "tasks", "-A", "cli_tasks_app", "list", "--json"],
        cwd=os.getcwd(),
        env={**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
        )},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert {r["id"]: r["status"] for r in rows} == {ok_id: "completed", bad_id: "failed"}


def test_help_and_missing_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = invoke("tasks", "--help").output
    assert "-A, --app MODULE" in out
    for sub in ("stats", "list", "dlq"):
        assert sub in out
    assert "requeue" in invoke("tasks", "dlq", "--help").output
    bad = CliRunner().invoke(cli, ["tasks", "-A", "no_such_module_here", "stats"])
    assert bad.exit_code == 1 and "could not import module" in bad.output


MEMORY_APP = """
from pacificpy.background.decorators import configure_background_tasks
from pacificpy.background.local import get_local_executor

configure_background_tasks(get_local_executor(max_workers=1))
"""


def real_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Any:
    """``pacificpy ARGS`` as a process of its own, as a user runs it."""
    full_env = {k: v for k, v in os.environ.items() if k != "PACIFICPY_APP"}
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    full_env.update({"PYTHONPATH": path, **(env or {})})
    return subprocess.run(
        [sys.executable, "-c", "from pacificpy.cli import main; main()", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [("list",), ("stats",), ("dlq", "list"), ("dlq", "requeue", "x"), ("dlq", "purge", "--yes")],
)
def test_without_an_app_is_an_error_naming_the_option(args: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, ["tasks", *args], env={"PACIFICPY_APP": None})
    assert result.exit_code == 2, result.output
    assert "no app given" in result.output
    assert "-A/--app MODULE" in result.output and "PACIFICPY_APP" in result.output


def test_without_an_app_the_real_command_fails(tmp_path: Path) -> None:
    proc = real_cli("tasks", "list", cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Tasks (" not in proc.stdout
    assert "-A/--app MODULE" in proc.stderr and "PACIFICPY_APP" in proc.stderr
    named = real_cli("tasks", "list", cwd=tmp_path, env={"PACIFICPY_APP": "memory_app"})
    assert "no app given" not in named.stderr  # the variable names it (here: no such module)


def test_an_in_memory_monitor_says_why_the_list_is_empty(tmp_path: Path) -> None:
    (tmp_path / "memory_app.py").write_text(MEMORY_APP)
    for args in (("list",), ("stats",)):
        proc = real_cli("tasks", "-A", "memory_app", *args, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        note = " ".join(proc.stderr.split())
        assert "the task monitor of memory_app is in memory" in note, note
        assert "sees none of the tasks your app and its workers ran" in note, note
        assert "configure_task_monitor(redis_url=...) in memory_app so" in note, note
    listed = real_cli("tasks", "-A", "memory_app", "list", cwd=tmp_path)
    assert "Tasks (0)" in listed.stdout


def test_ids_stay_whole_on_one_line_in_a_narrow_terminal(app_module: ModuleType) -> None:
    ok_id, bad_id = run_tasks(app_module)
    get_task_monitor().flush()
    for columns in ("60", "100", "200"):
        listed = real_cli("tasks", "-A", "cli_tasks_app", "list", cwd=Path.cwd(),
                          env={"COLUMNS": columns})  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.splitlines()
        for task_id in (ok_id, bad_id):
            assert any(task_id in line for line in lines), (columns, listed.stdout)
        assert "feed is down" in listed.stdout or columns == "100"
        assert max(len(line) for line in lines) <= int(columns), listed.stdout
        # The local executor's dead letters live in this process: list them from here.
        letters = CliRunner(env={"COLUMNS": columns}).invoke(
            cli, ["tasks", "-A", "cli_tasks_app", "dlq", "list"], catch_exceptions=False
        )
        assert letters.exit_code == 0, letters.output
        (letter,) = get_backend().dead_letters_sync()
        assert any(letter.id in line for line in letters.output.splitlines()), letters.output


def test_task_data_is_shown_as_written_never_as_markup(app_module: ModuleType) -> None:
    handles = [app_module.marked.delay(text) for text in ("[/x]", "[link=http://evil]x[/link]")]
    for handle in handles:
        with pytest.raises(TaskFailed):
            handle.result_sync(5)
    for args in (("list",), ("stats",), ("dlq", "list")):
        # Rendered as markup, "[/x]" raised rich's MarkupError and the link became "x".
        result = invoke("tasks", "-A", "cli_tasks_app", *args)
        assert result.exit_code == 0, result.output
        assert "cli.[bold]marked[/bold]" in result.output, args
        if args != ("stats",):
            assert "RuntimeError: [/x]" in result.output, args
            assert "[link=http://evil]x[/link]" in result.output, args
