"""A SQLite file the backend cannot use: a clear error at startup, ``EnqueueError`` with
the cause at ``.delay()``, never a crashed worker or a task silently lost."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pacificpy.background.backend import SQLiteBackgroundBackend
from pacificpy.background.backends.sqlite import DatabaseError
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.errors import EnqueueError
from tests.support.uvicorn_server import REPO_ROOT


@background
def add(a: int, b: int) -> int:
    return a + b


@pytest.fixture
def made() -> Iterator[list[SQLiteBackgroundBackend]]:
    backends: list[SQLiteBackgroundBackend] = []
    yield backends
    for backend in backends:
        backend.shutdown_sync(timeout=5)


def _expect_unusable(
    made: list[SQLiteBackgroundBackend], path: Path | str, *words: str, **options: object
) -> None:
    """Startup raises ``DatabaseError`` and ``.delay()`` ``EnqueueError``, both naming the
    file and saying what is wrong (``words``)."""
    backend = SQLiteBackgroundBackend(path, 1, **options)  # type: ignore[arg-type]
    made.append(backend)
    with pytest.raises(DatabaseError) as at_start:
        asyncio.run(backend.startup())
    configure_background_tasks(backend)
    with pytest.raises(EnqueueError) as at_call:
        add.delay(1, 2)
    for error in (str(at_start.value), str(at_call.value)):
        assert str(path) in error
        for word in words:
            assert word in error, error
    assert at_call.value.cause is not None
    assert at_call.value.task_name == add.name


def test_a_file_that_is_not_a_database(tmp_path: Path, made: list[SQLiteBackgroundBackend]) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a database\n" * 200)
    _expect_unusable(made, path, "not a SQLite database, or it is corrupt")
    assert path.read_text().startswith("these are my notes")  # left as it was


def test_a_corrupt_database(tmp_path: Path, made: list[SQLiteBackgroundBackend]) -> None:
    path = tmp_path / "tasks.db"
    good = SQLiteBackgroundBackend(path, consume=False)
    good.db.check()
    good.db.close()
    raw = bytearray(path.read_bytes())
    raw[0:100] = b"\xde\xad" * 50  # the header: garbage
    path.write_bytes(bytes(raw))
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    _expect_unusable(made, path, "corrupt")


def test_a_directory(tmp_path: Path, made: list[SQLiteBackgroundBackend]) -> None:
    _expect_unusable(made, tmp_path, "is a directory")


def test_a_missing_directory(tmp_path: Path, made: list[SQLiteBackgroundBackend]) -> None:
    _expect_unusable(made, tmp_path / "no" / "such" / "tasks.db", "exist and are writable")


def test_a_read_only_file_system(made: list[SQLiteBackgroundBackend]) -> None:
    """/proc is read-only even for root (the suite may run as root, where chmod does not
    stop a write)."""
    _expect_unusable(made, "/proc/pacificpy-tasks.db", "writable")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only files anyway")
def test_a_read_only_file(tmp_path: Path, made: list[SQLiteBackgroundBackend]) -> None:
    path = tmp_path / "tasks.db"
    SQLiteBackgroundBackend(path).db.check()
    for p in tmp_path.iterdir():
        p.chmod(0o444)
    tmp_path.chmod(0o555)
    try:
        _expect_unusable(made, path, "writable")
    finally:
        tmp_path.chmod(0o755)


def test_a_locked_database(tmp_path: Path, made: list[SQLiteBackgroundBackend]) -> None:
    """Another process holds the write lock longer than ``busy_timeout``."""
    path = tmp_path / "tasks.db"
    backend = SQLiteBackgroundBackend(path, 1, busy_timeout=0.2)
    made.append(backend)
    asyncio.run(backend.startup())  # the app started, then the lock was taken
    configure_background_tasks(backend)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        late = SQLiteBackgroundBackend(path, 1, busy_timeout=0.2)
        with pytest.raises(DatabaseError, match="locked"):
            asyncio.run(late.startup())  # an app starting now is told
        with pytest.raises(EnqueueError) as info:
            add.delay(1, 2)
        assert "locked" in str(info.value)
        assert "held its write lock for more than 0.2 s" in str(info.value)
        assert isinstance(info.value.cause, sqlite3.OperationalError)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert add.delay(1, 2).result_sync(30) == 3  # the lock is gone: it works again


def test_a_newer_schema_is_refused(tmp_path: Path, made: list[SQLiteBackgroundBackend]) -> None:
    path = tmp_path / "tasks.db"
    SQLiteBackgroundBackend(path).db.check()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE pacificpy_meta SET value = '999' WHERE name = 'schema_version'")
    _expect_unusable(made, path, "schema version 999", "upgrade PacificPy")


def test_pacificpy_worker_says_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n" * 100)
    app = tmp_path / "badfile_app.py"
    app.write_text(
        "from pacificpy.background.backend import SQLiteBackgroundBackend\n"
        "from pacificpy.background.decorators import configure_background_tasks\n"
        f"configure_background_tasks(SQLiteBackgroundBackend({str(path)!r}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)])}
    proc = subprocess.run(
        [sys.executable, "-c", "from pacificpy.cli import main; main()", "worker", "badfile_app"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "not a SQLite database, or it is corrupt" in proc.stderr
    assert "Traceback" not in proc.stderr
