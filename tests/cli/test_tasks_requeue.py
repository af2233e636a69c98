"""``pacificpy tasks dlq requeue``: a letter that cannot be requeued stays, the command
prints why and exits 1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import pickle
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from pacificpy.background.dead_letter import DeadLetter
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import LocalExecutor, get_local_executor
from pacificpy.cli import cli
from pacificpy.errors import TaskFailed
from tests.support.wait import wait_for

OLD_KEY = b"cli-requeue-old-signing-key-0123"
NEW_KEY = b"cli-requeue-new-signing-key-0123"


@background
def flaky_export(report: str) -> None:
    raise RuntimeError("export target is down")


@pytest.fixture
def executor() -> Iterator[LocalExecutor]:
    ex = get_local_executor(max_workers=2)
    configure_background_tasks(ex, signing_key=OLD_KEY)
    yield ex
    ex.shutdown_sync(timeout=5)


def requeue(letter_id: str) -> Result:
    return CliRunner().invoke(cli, ["tasks", "dlq", "requeue", letter_id])


def failed_letter(executor: LocalExecutor) -> DeadLetter:
    handle = flaky_export.delay("q3")
    with pytest.raises(TaskFailed):
        handle.result_sync(10)
    (letter,) = [d for d in executor.dead_letters_sync() if d.task_id == handle.id]
    return letter


def test_a_letter_that_no_longer_decodes_stays(executor: LocalExecutor) -> None:
    letter = failed_letter(executor)
    configure_background_tasks(executor, signing_key=NEW_KEY)  # the key was rotated
    result = requeue(letter.id)
    assert result.exit_code == 1, result.output
    assert "signature" in result.output and letter.id in result.output
    assert [d.to_dict() for d in executor.dead_letters_sync()] == [letter.to_dict()]


def test_a_letter_that_never_verified_stays(executor: LocalExecutor) -> None:
    executor.submit_raw(b"{not json")
    letters = wait_for(executor.dead_letters_sync, timeout=10, what="the dead letter")
    result = requeue(letters[0].id)
    assert result.exit_code == 1, result.output
    assert "cannot be requeued" in result.output
    assert executor.dead_letters_sync() == letters


def test_a_planted_pickle_is_never_loaded(executor: LocalExecutor, tmp_path: Path) -> None:
    path = tmp_path / "planted"

    class Planted:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(path), "w"))

    body = orjson.dumps({
        "v": 1, "id": uuid.uuid4().hex, "t": flaky_export.name, "q": "default", "n": 1,
        "ts": time.time(), "s": "pickle", "a": [], "k": {},
        "p": base64.b64encode(pickle.dumps(((Planted(),), {}))).decode(),
    })  # fmt: skip
    data = b"pp1." + hmac.new(OLD_KEY, body, hashlib.sha256).hexdigest().encode() + b"." + body
    letter = DeadLetter(
        id=uuid.uuid4().hex, task_id=None, task_name=flaky_export.name, reason="failed",
        error="planted", data=data.decode(), requeueable=True,
    )  # fmt: skip
    executor._dead.add(letter)
    result = requeue(letter.id)
    assert result.exit_code == 1 and "allow_pickle" in result.output, result.output
    assert not path.exists(), "the CLI unpickled a dead letter while allow_pickle was off"
    assert executor.dead_letters_sync() == [letter]


def test_a_refused_enqueue_puts_the_letter_back(executor: LocalExecutor) -> None:
    letter = failed_letter(executor)
    executor.shutdown_sync(timeout=5)
    result = requeue(letter.id)
    assert result.exit_code == 1, result.output
    assert "kept" in result.output and "shutting down" in result.output
    assert [d.to_dict() for d in executor.dead_letters_sync()] == [letter.to_dict()]
