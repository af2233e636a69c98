"""The README's Celery and ARQ snippets, run as written with real workers.

The test reads README.md (nothing is copied here): it takes the quick start's module,
replaces its ``configure_background_tasks(...)`` line with a backend snippet, writes the
result as ``myapp.py`` in a temporary directory, starts each worker command of the
snippet's ``# then:`` comment there as a real subprocess, enqueues the quick start's task
from this process and checks that it ran, and that the shared Redis monitor shows it.

The one change made to the README's text: the snippets name Redis at ``localhost:6379``
(``redis://localhost:6379/0`` and ``host="localhost", port=6379``); the test rewrites
those to a redis-server of its own, on a free port, so the machine's Redis is never used.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from pacificpy.background.monitor import get_task_monitor
from pacificpy.types import TaskStatus
from tests.background.backends._module_workers import ROOT, imported, running
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(180)

README = ROOT / "README.md"
_FENCE = re.compile(r"```python\n(.*?)```", re.S)
_THEN = re.compile(r"^#\s*then:\s*(.+?)\s*(?:\(or:\s*(.+?)\))?\s*$", re.M)


def _sections() -> tuple[str, dict[str, str]]:
    """The quick start's module, and each backend snippet after it by backend name."""
    text = README.read_text()
    quick = text[text.index("## Quick start") :]
    quick = quick[: quick.index("\n## ", 1)]
    blocks = _FENCE.findall(quick)
    assert len(blocks) >= 3, "the quick start and a Celery and an ARQ snippet"
    snippets: dict[str, str] = {}
    for block in blocks[1:]:
        if "CeleryBackgroundBackend(" in block:
            snippets["celery"] = block
        elif "ARQBackgroundBackend(" in block:
            snippets["arq"] = block
    assert set(snippets) == {"celery", "arq"}, snippets
    return blocks[0], snippets


def _commands(snippet: str) -> list[str]:
    """The worker commands of the snippet's ``# then: A   (or: B)`` comment."""
    match = _THEN.search(snippet)
    assert match, f"no '# then:' line in\n{snippet}"
    return [c for c in match.groups() if c]


def _cases() -> list[tuple[str, str]]:
    _, snippets = _sections()
    return [(name, cmd) for name, snippet in snippets.items() for cmd in _commands(snippet)]


def _own_redis(snippet: str, port: int) -> str:
    """The snippet with its Redis (``localhost:6379``) moved to ``127.0.0.1:port``."""
    rewritten = snippet.replace("redis://localhost:6379/", f"redis://127.0.0.1:{port}/")
    rewritten = rewritten.replace('host="localhost", port=6379', f'host="127.0.0.1", port={port}')
    assert "6379" not in rewritten and "localhost" not in rewritten, rewritten
    return rewritten


def _module(quick_start: str, snippet: str) -> str:
    """The quick start with its ``configure_background_tasks(...)`` line replaced."""
    lines = quick_start.splitlines()
    (index,) = [i for i, line in enumerate(lines) if line.startswith("configure_background_tasks(")]
    return "\n".join([*lines[:index], snippet.rstrip("\n"), *lines[index + 1 :]]) + "\n"


def _task_name(quick_start: str) -> str:
    match = re.search(r"@background\b.*\ndef (\w+)\(", quick_start)
    assert match, "the quick start declares a @background task"
    return match.group(1)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone: no other test's worker can take its tasks."""
    with RedisServer() as server:
        yield server


@pytest.mark.parametrize(("backend", "command"), _cases())
def test_readme_backend_snippet_runs_a_task(
    backend: str, command: str, own_redis: RedisServer, tmp_path: Path
) -> None:
    quick_start, snippets = _sections()
    assert command.split()[0] in {"celery", "arq", "pacificpy"}
    source = _module(quick_start, _own_redis(snippets[backend], own_redis.port))
    (tmp_path / "myapp.py").write_text(source)
    task_name = _task_name(quick_start)
    with running(command, tmp_path) as worker, imported(tmp_path, "myapp") as myapp:
        handle = getattr(myapp, task_name).delay(7)

        def finished() -> bool:
            assert worker.alive(), f"{command!r} exited:\n{worker.log()[-4000:]}"
            return handle.status_sync() in (TaskStatus.COMPLETED, TaskStatus.FAILED)

        try:
            wait_for(finished, 120, what=f"task {handle.id} run by {command!r}", interval=0.1)
        except AssertionError:
            raise AssertionError(f"not run; worker log:\n{worker.log()[-4000:]}") from None
        assert handle.result_sync(timeout=10) == {"status": "sent", "user_id": 7}
        # The monitor is shared through Redis: this process sees what the worker recorded.
        monitor = get_task_monitor()

        def recorded() -> bool:
            rec = monitor.get(handle.id)
            return rec is not None and rec.status is TaskStatus.COMPLETED

        wait_for(recorded, 30, what="the worker's record in the shared monitor")
