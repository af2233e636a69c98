"""``pacificpy tasks cancel ID``: cancels through the app's backend; exit 1 for a task that
had finished; a clear refusal for the local executor of another process."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result

from pacificpy.background.decorators import background
from pacificpy.cli import cli
from pacificpy.errors import TaskCancelled
from pacificpy.types import TaskStatus
from tests.background.conftest import executor  # noqa: F401  (the fixture)

APP_SOURCE = """
import os

from arq.connections import RedisSettings

from pacificpy.background.backends.arq_backend import ARQBackgroundBackend
from pacificpy.background.decorators import configure_background_tasks

settings = RedisSettings.from_dsn(os.environ["CLI_CANCEL_REDIS"])
backend = ARQBackgroundBackend(redis_settings=settings, key_prefix=os.environ["CLI_CANCEL_PREFIX"])
configure_background_tasks(backend)
"""

LOCAL_SOURCE = """
from pacificpy.background.decorators import configure_background_tasks
from pacificpy.background.local import get_local_executor

configure_background_tasks(get_local_executor(1))
"""


@background
def later(x: int) -> int:
    return x


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.mark.usefixtures("executor")
def test_cancel_a_delayed_task() -> None:
    handle = later.apply_async(args=(1,), countdown=30)
    result = invoke("tasks", "cancel", handle.id)
    assert result.exit_code == 0, result.output
    assert f"cancelled task {handle.id}" in result.output
    assert handle.status_sync() is TaskStatus.CANCELLED
    with pytest.raises(TaskCancelled):
        handle.result_sync(5)


@pytest.mark.usefixtures("executor")
def test_cancel_a_finished_task_exits_1() -> None:
    handle = later.delay(2)
    assert handle.result_sync(5) == 2
    result = invoke("tasks", "cancel", handle.id)
    assert result.exit_code == 1
    assert "had already finished" in result.output
    assert handle.status_sync() is TaskStatus.COMPLETED


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str) -> Iterator[str]:
    prefix = "clicancel" + uuid.uuid4().hex[:8]
    (tmp_path / "cli_cancel_app.py").write_text(APP_SOURCE)
    (tmp_path / "cli_cancel_local.py").write_text(LOCAL_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("CLI_CANCEL_REDIS", redis_url)
    monkeypatch.setenv("CLI_CANCEL_PREFIX", prefix)
    yield prefix
    for name in ("cli_cancel_app", "cli_cancel_local"):
        sys.modules.pop(name, None)
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def test_cancel_through_the_app_module_lays_the_tombstone(project: str, redis_url: str) -> None:
    task_id = uuid.uuid4().hex
    result = invoke("tasks", "-A", "cli_cancel_app", "cancel", task_id)
    assert result.exit_code == 0, result.output
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.zscore(f"{project}:cancelled", task_id) is not None
        assert client.exists(f"arq:result:{task_id}")
        again = invoke("tasks", "-A", "cli_cancel_app", "cancel", task_id)
        assert again.exit_code == 1  # it has its cancelled outcome now
    finally:
        client.delete(f"arq:result:{task_id}")
        client.close()


def test_cancel_of_a_local_executor_in_another_process_is_refused(project: str) -> None:
    result = invoke("tasks", "-A", "cli_cancel_local", "cancel", uuid.uuid4().hex)
    assert result.exit_code == 1
    assert "inside the app's own process" in result.output
