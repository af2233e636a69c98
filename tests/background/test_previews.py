"""Previews hide secrets bound by position too (monitor, dashboard, Celery headers), and
what the monitor, the outcome board and the dead letters keep is capped in size."""

from __future__ import annotations

import gc
import os
import time
import uuid
import weakref

import orjson
import pytest
import redis
from celery import Celery

from pacificpy.background._outcomes import EvictedOutcome, OutcomeBoard
from pacificpy.background.backend import CeleryBackgroundBackend
from pacificpy.background.dead_letter import DeadLetter, dead_letter_view
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import LocalExecutor
from pacificpy.background.monitor import InMemoryMonitorStore, TaskMonitor, get_task_monitor
from pacificpy.background.monitor.previews import (
    ERROR_CHARS,
    PREVIEW_CHARS,
    TRACEBACK_CHARS,
    call_reprs,
    cap_traceback,
    preview_call,
)
from pacificpy.background.task import Outcome, TaskEnvelope
from pacificpy.errors import BackgroundError, TaskFailed
from pacificpy.types import TaskStatus
from tests.conformance.harness import SIGNING_KEY

BIG = 5 * 1024 * 1024


@background(name="tests.previews.login")
def login(user: str, password: str) -> str:
    return f"welcome {user}"


@background(name="tests.previews.connect")
def connect(host: str, *tokens: str, **credentials: str) -> None:
    raise ConnectionError(f"cannot reach {host}")


@background(name="tests.previews.huge_failure")
def huge_failure(lines: bool) -> None:
    text = "line of text\n" * (BIG // 13) if lines else "x" * BIG
    raise ValueError(text)


@background(name="tests.previews.huge_result")
def huge_result() -> str:
    return "y" * BIG


# -- item: secrets passed positionally -----------------------------------------------------


def test_a_secret_passed_positionally_is_hidden_in_the_monitor(executor: LocalExecutor) -> None:
    handle = login.delay("bob", "hunter2")
    assert handle.result_sync(5) == "welcome bob"
    rec = get_task_monitor().get(handle.id)
    assert rec is not None
    assert rec.args_preview == "'bob', '***'"

    by_name = login.delay("bob", password="hunter2")
    by_name.result_sync(5)
    rec = get_task_monitor().get(by_name.id)
    assert rec is not None and rec.args_preview == "'bob', password='***'"


def test_star_args_and_star_kwargs_named_like_secrets_are_hidden() -> None:
    text = preview_call(
        ("db", "t-1", "t-2"), {"pw": "p-1", "opts": {"api_key": "k-1"}}, task=connect.name
    )
    assert text == "'db', '***', '***', pw='***', opts='***'"  # all of **credentials
    # A task this process does not know: keyword names only (nothing to bind to).
    assert preview_call(("bob", "hunter2"), {}, task="not.registered") == "'bob', 'hunter2'"
    assert call_reprs(login.name, ("bob", "hunter2"), {}) == ("['bob', '***']", "{}")
    assert call_reprs(login.name, ("bob",), {"password": "hunter2"}) == (
        "['bob']",
        "{'password': '***'}",
    )


def test_dead_letter_view_hides_a_positional_secret(executor: LocalExecutor) -> None:
    handle = connect.delay("db", "t-secret", pw="p-secret")
    with pytest.raises(TaskFailed):
        handle.result_sync(5)
    (letter,) = executor.dead_letters_sync()
    view = dead_letter_view(letter)
    assert view["args_preview"] == "'db', '***', pw='***'"
    rec = get_task_monitor().get(handle.id)
    assert rec is not None and rec.args_preview == "'db', '***', pw='***'"


def test_celery_argsrepr_and_kwargsrepr_headers_hide_secrets(redis_url: str) -> None:
    app = Celery("previews", broker=redis_url)
    backend = CeleryBackgroundBackend(celery_app=app)
    configure_background_tasks(backend, signing_key=SIGNING_KEY)
    queue = f"previews-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    try:
        login.apply_async(args=("bob", "hunter2"), queue=queue)
        login.apply_async(args=("bob",), kwargs={"password": "hunter2"}, queue=queue)
        key = queue + backend._broker().priority_lists[0]  # priority 0's list
        frames = [client.rpop(key), client.rpop(key)]
        headers = [orjson.loads(raw)["headers"] for raw in frames if raw is not None]
        assert len(headers) == 2
        for h in headers:
            assert h["task"] == login.name
            assert "hunter2" not in h["argsrepr"] and "hunter2" not in h["kwargsrepr"]
        assert (headers[0]["argsrepr"], headers[0]["kwargsrepr"]) == ("['bob', '***']", "{}")
        assert (headers[1]["argsrepr"], headers[1]["kwargsrepr"]) == (
            "['bob']",
            "{'password': '***'}",
        )
    finally:
        client.delete(queue)
        client.close()
        backend.shutdown_sync()


# -- item: unbounded sizes -----------------------------------------------------------------


@pytest.mark.parametrize("lines", [False, True], ids=["one-line", "many-lines"])
def test_a_5mb_error_is_capped_in_monitor_outcome_and_dead_letter(
    executor: LocalExecutor, lines: bool
) -> None:
    handle = huge_failure.delay(lines)
    with pytest.raises(TaskFailed) as caught:
        handle.result_sync(30)

    def check(error: str | None, trace: str | None, slack: int = 0) -> None:
        assert error is not None and trace is not None
        assert len(error) <= ERROR_CHARS + slack
        assert "line of text" in error or "xxxx" in error
        assert len(trace) <= TRACEBACK_CHARS
        # The tail is kept: the raise site and the exception type are there.
        assert "raise ValueError(text)" in trace and "in huge_failure" in trace
        assert "ValueError: " in trace

    rec = get_task_monitor().get(handle.id)
    assert rec is not None and rec.status is TaskStatus.FAILED
    check(rec.error, rec.traceback)
    assert rec.error is not None and rec.error.startswith("ValueError: ")

    exc = caught.value
    check(str(exc), exc.traceback, slack=200)  # plus "task <name> <id> failed: ..."
    outcome = executor.wait_result_sync(handle.id, 5)
    check(outcome.error, outcome.traceback)

    (letter,) = executor.dead_letters_sync()
    check(letter.error, letter.traceback)
    assert letter.requeueable and letter.data  # the message itself is kept whole


def test_a_big_result_is_returned_whole_but_previewed_short(executor: LocalExecutor) -> None:
    handle = huge_result.delay()
    assert handle.result_sync(30) == "y" * BIG
    rec = get_task_monitor().get(handle.id)
    assert rec is not None and rec.result_preview is not None
    assert len(rec.result_preview) <= PREVIEW_CHARS and rec.result_preview.startswith("'yyy")


def test_the_monitor_does_not_keep_a_big_result_alive() -> None:
    class Rows(list[str]):
        pass

    mon = TaskMonitor(InMemoryMonitorStore())
    env = TaskEnvelope(task_id="big", task_name="n", enqueued_at=time.time())
    big = Rows(["row"] * 100_000)
    ref = weakref.ref(big)
    mon.task_completed(env, big, 0.1)
    small = Rows(["row"])
    small_ref = weakref.ref(small)
    mon.task_completed(TaskEnvelope(task_id="small", task_name="n"), small, 0.1)
    del big, small
    gc.collect()
    assert ref() is None  # rendered at once, not kept
    assert small_ref() is not None  # a small one is kept and rendered when read
    rec = mon.get("big")
    assert rec is not None and rec.result_preview is not None
    assert rec.result_preview.startswith("['row', 'row'") and len(rec.result_preview) <= 200
    assert mon.get("small").result_preview == "['row']"  # type: ignore[union-attr]


def test_cap_traceback_keeps_the_innermost_frames() -> None:
    frames = "".join(f'  File "m.py", line {i}, in f{i}\n    g{i}()\n' for i in range(2000))
    trace = "Traceback (most recent call last):\n" + frames + "KeyError: 'gone'\n"
    capped = cap_traceback(trace)
    assert len(capped) <= TRACEBACK_CHARS
    assert capped.endswith("    g1999()\nKeyError: 'gone'\n")
    assert "characters cut" in capped.splitlines()[0]
    assert cap_traceback("short\n") == "short\n"


def test_dead_letter_fields_are_capped_on_construction() -> None:
    letter = DeadLetter(
        id="l", task_id="t", task_name="n", reason="failed", error="e" * BIG,
        traceback="Traceback (most recent call last):\n" + "x" * BIG, data="d" * 100,
    )  # fmt: skip
    assert len(letter.error) <= ERROR_CHARS and letter.error.startswith("eee")
    assert letter.traceback is not None and len(letter.traceback) <= TRACEBACK_CHARS
    assert letter.data == "d" * 100
    assert DeadLetter.from_dict(letter.to_dict()) == letter


def test_outcome_board_is_bounded_by_bytes_oldest_values_first() -> None:
    board = OutcomeBoard(max_bytes=1_000_000)
    for i in range(5):
        board.post(f"t{i}", Outcome(TaskStatus.COMPLETED, value="v" * 300_000, attempts=1))
    assert board.bytes <= 1_000_000
    kept = [f"t{i}" for i in range(5) if not isinstance(board.get(f"t{i}"), EvictedOutcome)]
    assert kept == ["t2", "t3", "t4"]
    assert board.wait_sync("t4", 1).unwrap("t4") == "v" * 300_000
    gone = board.wait_sync("t0", 1)
    assert gone.status is TaskStatus.COMPLETED and gone.value is None
    with pytest.raises(BackgroundError, match="no longer kept"):
        gone.unwrap("t0", "n")

    # A failed outcome past the budget keeps its error, not its (capped) traceback.
    small = OutcomeBoard(max_bytes=20_000)
    small.post("f", Outcome(TaskStatus.FAILED, error="boom", traceback="t" * 900_000))
    failed = small.get("f")
    assert failed is not None and failed.traceback is not None
    assert len(failed.traceback) <= TRACEBACK_CHARS
    small.post("g", Outcome(TaskStatus.COMPLETED, value="w" * 19_500))
    failed = small.get("f")
    assert isinstance(failed, EvictedOutcome) and failed.traceback is None
    with pytest.raises(TaskFailed, match="boom"):
        failed.unwrap("f")

    # The newest outcome is kept whole even when it alone passes the budget.
    board.post("huge", Outcome(TaskStatus.COMPLETED, value="h" * 2_000_000))
    assert board.wait_sync("huge", 1).unwrap("huge") == "h" * 2_000_000
    board.clear("huge")
    assert board.bytes < 1_000_000
