"""A requeued dead letter keeps its argument preview in the monitor, on every backend.

Celery and ARQ run a real worker on a module of the test's own, with the monitor in Redis
shared by the worker and this process (as the README configures them); the local
executor, with its in-memory monitor, is the reference.
"""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest
import redis

from pacificpy.background.decorators import get_backend
from pacificpy.background.monitor import TaskRecord, get_task_monitor
from pacificpy.types import TaskStatus
from tests.background.backends._module_workers import imported, running
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(180)

MODULE = "previewapp"
SOURCE = textwrap.dedent(
    '''
    """Dead-letter requeue previews: one task that fails until its flag key exists."""
    import os

    import redis

    from pacificpy.background.decorators import background, configure_background_tasks
    from pacificpy.background.monitor import configure_task_monitor

    URL = os.environ["PACIFICPY_TEST_REDIS"]
    KIND = os.environ["PACIFICPY_TEST_BACKEND"]

    if KIND == "celery":
        from celery import Celery
        from pacificpy.background.backend import CeleryBackgroundBackend

        celery_app = Celery("previewapp", broker=URL)
        configure_background_tasks(CeleryBackgroundBackend(celery_app=celery_app))
    elif KIND == "arq":
        from arq.connections import RedisSettings
        from pacificpy.background.backend import ARQBackgroundBackend

        arq_backend = ARQBackgroundBackend(redis_settings=RedisSettings.from_dsn(URL))
        configure_background_tasks(arq_backend)
        WorkerSettings = arq_backend.worker_settings()
    else:
        from pacificpy.background.local import get_local_executor

        configure_background_tasks(get_local_executor(max_workers=1))
    if KIND != "local":
        configure_task_monitor(redis_url=URL)


    @background(name="preview.flaky")
    def flaky(flag: str, user: dict, note: str = "") -> str:
        if not redis.Redis.from_url(URL).exists(flag):
            raise RuntimeError("not yet")
        return "ok"
    '''
)
COMMANDS = {
    "celery": f"celery -A {MODULE} worker --concurrency=1 --without-gossip --without-mingle",
    "arq": f"arq {MODULE}.WorkerSettings",
}


def _record(task_id: str, *statuses: TaskStatus) -> TaskRecord:
    def found() -> TaskRecord | None:
        rec = get_task_monitor().get(task_id)
        return rec if rec is not None and rec.status in statuses else None

    return wait_for(found, 60, what=f"task {task_id} {statuses} in the monitor")


def _previews(module: object, url: str, *, use_async: bool = False) -> tuple[str, str]:
    """Run a task into the dead-letter queue, requeue it, let it succeed: the argument
    preview of its record before and after the requeue."""
    backend = get_backend()
    flag = "preview-flag"
    store = redis.Redis.from_url(url)
    store.delete(flag)
    handle = module.flaky.delay(flag, {"name": "ada", "password": "hunter2"}, note="hello")  # type: ignore[attr-defined]
    letter = wait_for(
        lambda: next((d for d in backend.dead_letters_sync() if d.task_id == handle.id), None),
        60,
        what="the dead letter",
    )
    before = _record(handle.id, TaskStatus.FAILED, TaskStatus.DEAD).args_preview
    store.set(flag, 1)
    if use_async:
        new_id = asyncio.run(backend.requeue_dead_letter(letter.id))
    else:
        new_id = backend.requeue_dead_letter_sync(letter.id)
    assert new_id == handle.id
    assert handle.result_sync(timeout=60) == "ok"
    after = _record(handle.id, TaskStatus.COMPLETED).args_preview
    assert before is not None and after is not None
    store.delete(flag)
    return before, after


@pytest.fixture
def local_preview(own_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """What the local executor (in-memory monitor) shows after a requeue."""
    monkeypatch.setenv("PACIFICPY_TEST_BACKEND", "local")
    directory = tmp_path / "local"
    directory.mkdir()
    (directory / f"{MODULE}.py").write_text(SOURCE)
    with imported(directory, MODULE) as module:
        before, after = _previews(module, own_redis.url)
    assert before == after
    assert "hello" in after and "ada" in after and "hunter2" not in after
    return after


@pytest.mark.parametrize(
    ("kind", "use_async"), [("arq", False), ("arq", True), ("celery", False), ("celery", True)]
)
def test_requeued_dead_letter_keeps_its_argument_preview(
    kind: str,
    use_async: bool,
    own_redis: RedisServer,
    local_preview: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PACIFICPY_TEST_BACKEND", kind)
    directory = tmp_path / kind
    directory.mkdir()
    (directory / f"{MODULE}.py").write_text(SOURCE)
    with running(COMMANDS[kind], directory), imported(directory, MODULE) as module:
        before, after = _previews(module, own_redis.url, use_async=use_async)
    assert before == local_preview
    assert after == local_preview  # the requeued run's record, as on the local executor
