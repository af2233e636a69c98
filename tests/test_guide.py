"""Every code sample of the user guide runs as written, on the local executor.

The samples are read from ``background-tasks-guide.md`` at test time (the shared copy
beside the repository when present, else the copy vendored in ``tests/data``), executed
with the helpers the guide leaves undefined (``process_data``, ``TransientError``, ...),
and their tasks are called both directly and with ``.delay()``.

The Celery and ARQ configuration samples are only checked to construct (their engineers
test those backends for real); they point at the suite's own redis-server, never 6379.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pacificpy import PacificPy
from pacificpy.background import get_queue_length as configured_queue_length
from pacificpy.background.decorators import background, configure_background_tasks, get_backend
from pacificpy.background.local import LocalExecutor, get_local_executor
from pacificpy.background.monitor import get_task_monitor, record_metric
from pacificpy.errors import TaskFailed, TaskSerializationError
from pacificpy.testing import TestClient
from pacificpy.types import TaskStatus

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_GUIDE = REPO_ROOT.parent / "shared" / "background-tasks-guide.md"
VENDORED_GUIDE = Path(__file__).resolve().parent / "data" / "background-tasks-guide.md"

_counter = itertools.count()


def guide_path() -> Path:
    """The shared guide when it is beside the clone, else the vendored copy."""
    return SHARED_GUIDE if SHARED_GUIDE.is_file() else VENDORED_GUIDE


def guide_blocks() -> list[str]:
    text = guide_path().read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


#: A marker found in exactly one sample -> what that sample is.
MARKERS = {
    "def send_email(": "notifications",
    "def process_payment(": "payment",
    "def generate_report(": "report",
    "# Use local executor for development": "local",
    "CeleryBackgroundBackend(celery_app": "celery",
    "ARQBackgroundBackend(": "arq",
    "def update_user_profile(": "idempotency",
    "def process_with_retry(": "retry",
    "def step_one(": "chaining",
    "def robust_task(": "error_handling",
    "def dlq_task(": "dead_letter",
    "def monitored_task(": "monitoring",
    "def timed_task(": "metrics",
    "# celery -A myapp worker": "worker_scaling",
    "def check_queue_backlog(": "queue",
    "def memory_efficient_task(": "resources",
    "def do_everything(": "task_size",
    "def process_complex_data(": "serialization",
    "@app.task(soft_time_limit=30": "timeouts",
    "def process_user_data(": "security",
    "def send_welcome_email(": "complete_example",
}


def block(kind: str) -> str:
    """The guide's sample of this kind (exactly one must match)."""
    markers = [m for m, k in MARKERS.items() if k == kind]
    found = [b for b in guide_blocks() if any(m in b for m in markers)]
    assert len(found) == 1, f"expected one guide sample for {kind!r}, found {len(found)}"
    return found[0]


def run_block(kind: str, **names: Any) -> dict[str, Any]:
    """Execute the sample as a module of its own, with ``names`` predefined."""
    module = f"guide_sample_{kind}_{next(_counter)}"
    namespace: dict[str, Any] = {
        "__name__": module,
        "background": background,
        "configure_background_tasks": configure_background_tasks,
        **names,
    }
    exec(compile(block(kind), f"<guide: {kind}>", "exec"), namespace)
    return namespace


@pytest.fixture
def executor() -> Iterator[LocalExecutor]:
    ex = get_local_executor(max_workers=4)
    configure_background_tasks(ex)
    yield ex
    ex.shutdown_sync(timeout=5)


def completed(handle: Any) -> Any:
    return handle.result_sync(timeout=10)


# -- the guide itself ---------------------------------------------------------------------------
def test_every_sample_is_covered() -> None:
    blocks = guide_blocks()
    assert blocks, f"no python samples in {guide_path()}"
    for code in blocks:
        kinds = {k for m, k in MARKERS.items() if m in code}
        assert len(kinds) == 1, f"guide sample not covered by tests/test_guide.py:\n{code}"


def test_vendored_guide_is_current() -> None:
    if not SHARED_GUIDE.is_file():
        pytest.skip("the shared guide is not beside this clone; the vendored copy is used")
    assert VENDORED_GUIDE.read_text(encoding="utf-8") == SHARED_GUIDE.read_text(encoding="utf-8"), (
        "tests/data/background-tasks-guide.md is stale: copy the shared guide over it"
    )


# -- When to use background tasks ---------------------------------------------------------------
def test_notifications_route_enqueues_email(executor: LocalExecutor) -> None:
    app = PacificPy()
    ns = run_block("notifications", app=app)
    send_email = ns["send_email"]
    assert send_email("a@example.com", "Hi", "Body") is None  # a direct call runs inline
    with TestClient(app) as client:
        response = client.post(
            "/notifications", json={"to": "a@example.com", "subject": "Hi", "body": "Hello"}
        )
        assert response.status_code == 200
        assert response.json() == {"status": "Email queued"}
        assert executor.join(timeout=10)
    records = get_task_monitor().list(name=send_email.name)
    assert [r.status for r in records] == [TaskStatus.COMPLETED]


def test_payment_and_report_tasks(executor: LocalExecutor) -> None:
    payment = run_block("payment")["process_payment"]
    report = run_block("report")["generate_report"]
    assert payment({"amount": 10}) is None
    assert report(1, "monthly") is None
    assert completed(payment.delay({"amount": 10, "currency": "EUR"})) is None
    assert completed(report.delay(1, "monthly")) is None


# -- Backend selection --------------------------------------------------------------------------
def test_local_executor_configuration() -> None:
    ns = run_block("local")
    executor = ns["local_executor"]
    assert isinstance(executor, LocalExecutor)
    assert executor.max_workers == 4
    assert get_backend() is executor


def test_celery_configuration_constructs(redis_server: Any) -> None:
    # The sample names the machine's Redis; point it at the suite's own server instead.
    assert "redis://localhost:6379/0" in block("celery")
    ns = _with_redis_port("celery", redis_server.port, {})
    assert get_backend() is ns["celery_backend"]


def test_arq_configuration_constructs(redis_server: Any) -> None:
    ns = _with_redis_port("arq", redis_server.port, {})
    assert get_backend() is ns["arq_backend"]


def _with_redis_port(kind: str, port: int, names: dict[str, Any]) -> dict[str, Any]:
    code = block(kind).replace("6379", str(port))
    namespace: dict[str, Any] = {
        "__name__": f"guide_sample_{kind}_{next(_counter)}",
        "background": background,
        "configure_background_tasks": configure_background_tasks,
        **names,
    }
    # A missing backend extra (BackendNotAvailable, ImportError) fails here: the test
    # extra installs both, so it can only mean a broken install.
    exec(compile(code, f"<guide: {kind}>", "exec"), namespace)
    return namespace


# -- Task design patterns -----------------------------------------------------------------------
def test_idempotency_sample(executor: LocalExecutor) -> None:
    store: dict[int, dict[str, Any]] = {}

    def is_profile_updated(user_id: int, profile_data: dict[str, Any]) -> bool:
        return all(store.get(user_id, {}).get(k) == v for k, v in profile_data.items())

    def apply_profile_update(user_id: int, profile_data: dict[str, Any]) -> dict[str, Any]:
        store.setdefault(user_id, {}).update(profile_data)
        return {"status": "updated"}

    ns = run_block(
        "idempotency",
        is_profile_updated=is_profile_updated,
        apply_profile_update=apply_profile_update,
    )
    task = ns["update_user_profile"]
    assert completed(task.delay(1, {"name": "Ada"})) == {"status": "updated"}
    assert completed(task.delay(1, {"name": "Ada"})) == {"status": "already_updated"}
    assert task(1, {"name": "Ada"}) == {"status": "already_updated"}
    first = task.apply_async((2, {"name": "Bo"}), idempotency_key="k")
    second = task.apply_async((2, {"name": "Bo"}), idempotency_key="k")
    assert first.id == second.id
    assert completed(second) == {"status": "updated"}


class TransientError(Exception):
    pass


def test_retry_sample(executor: LocalExecutor) -> None:
    calls: list[dict[str, Any]] = []

    def process_data(data: dict[str, Any]) -> dict[str, Any]:
        calls.append(data)
        if data.get("fail"):
            raise TransientError("try later")
        return {"ok": data["n"]}

    ns = run_block("retry", process_data=process_data, TransientError=TransientError)
    task = ns["process_with_retry"]
    assert task({"n": 1}) == {"ok": 1}
    assert completed(task.delay({"n": 2})) == {"ok": 2}
    with pytest.raises(TaskFailed) as info:
        completed(task.delay({"fail": True}, max_retries=0))
    assert info.value.error_type == "TransientError"


def test_retry_sample_backs_off_then_succeeds(executor: LocalExecutor) -> None:
    failures = iter([True])

    def process_data(data: dict[str, Any]) -> str:
        if next(failures, False):
            raise TransientError("once")
        return "done"

    ns = run_block("retry", process_data=process_data, TransientError=TransientError)
    started = time.monotonic()
    assert completed(ns["process_with_retry"].delay({})) == "done"
    assert time.monotonic() - started >= 1.0  # the sample's own backoff: 2**0 + jitter


def test_chaining_sample(executor: LocalExecutor) -> None:
    ns = run_block(
        "chaining",
        process_step_one=lambda d: {**d, "one": True},
        process_step_two=lambda d: {**d, "two": True},
        process_step_three=lambda d: {**d, "three": True},
    )
    first = ns["step_one"].delay({"id": 1})
    assert completed(first) == {"id": 1, "one": True}
    assert executor.join(timeout=10)
    monitor = get_task_monitor()
    two = monitor.list(name=ns["step_two"].name)
    three = monitor.list(name=ns["step_three"].name)
    assert [r.status for r in two + three] == [TaskStatus.COMPLETED] * 2
    assert two[0].parent_id == first.id
    assert three[0].parent_id == two[0].id
    assert three[0].result_preview is not None and "three" in three[0].result_preview


# -- Error handling -----------------------------------------------------------------------------
def test_error_handling_sample(executor: LocalExecutor, caplog: pytest.LogCaptureFixture) -> None:
    stored: list[tuple[Any, str]] = []

    def process_data(data: dict[str, Any]) -> int:
        return 10 // data["d"]

    ns = run_block(
        "error_handling",
        process_data=process_data,
        store_error=lambda data, error: stored.append((data, error)),
    )
    task = ns["robust_task"]
    assert task({"d": 2}) == 5
    with caplog.at_level(logging.ERROR), pytest.raises(TaskFailed):
        completed(task.delay({"d": 0}))
    assert stored == [({"d": 0}, "integer division or modulo by zero")]
    assert any("Task failed" in r.getMessage() and r.exc_info for r in caplog.records)
    assert completed(task.delay({"d": 5})) == 2


def test_dead_letter_sample(executor: LocalExecutor) -> None:
    dlq: list[tuple[Any, str]] = []

    def process_data(data: dict[str, Any]) -> Any:
        if data.get("bad"):
            raise RuntimeError("broken")
        return data

    ns = run_block(
        "dead_letter",
        process_data=process_data,
        send_to_dlq=lambda data, error: dlq.append((data, error)),
    )
    task = ns["dlq_task"]
    assert completed(task.delay({"x": 1})) == {"x": 1}
    assert completed(task.delay({"bad": True}, retry_count=5)) == {"status": "moved_to_dlq"}
    assert dlq == [({"bad": True}, "broken")]
    with pytest.raises(TaskFailed):
        completed(task.delay({"bad": True}))
    letters = executor.dead_letters_sync()
    assert [(d.args, d.error) for d in letters] == [([{"bad": True}], "broken")]


# -- Monitoring ---------------------------------------------------------------------------------
def test_monitoring_sample(executor: LocalExecutor) -> None:
    def process_data(data: dict[str, Any]) -> Any:
        if data.get("bad"):
            raise ValueError("bad data")
        return {"sum": sum(data["v"])}

    ns = run_block("monitoring", process_data=process_data, uuid=uuid)
    task = ns["monitored_task"]
    assert completed(task.delay({"v": [1, 2]})) == {"sum": 3}
    with pytest.raises(TaskFailed):
        completed(task.delay({"bad": True}))
    monitor = get_task_monitor()
    hand = {r.status for r in monitor.list(name="monitored_task")}
    assert hand == {TaskStatus.COMPLETED, TaskStatus.FAILED}


def test_metrics_sample(executor: LocalExecutor) -> None:
    def process_data(data: dict[str, Any]) -> Any:
        if data.get("bad"):
            raise ValueError("bad data")
        return "ok"

    ns = run_block("metrics", process_data=process_data, record_metric=record_metric)
    task = ns["timed_task"]
    assert completed(task.delay({})) == "ok"
    with pytest.raises(TaskFailed):
        completed(task.delay({"bad": True}))
    user = get_task_monitor().metrics().user  # (count, sum, last value) per metric
    assert user[("task_duration", ())][0] == 1
    assert user[("task_failure_duration", ())][0] == 1


# -- Scaling ------------------------------------------------------------------------------------
def test_worker_scaling_sample_is_comments() -> None:
    # The sample is two shell commands in comments; the commands themselves are run by
    # tests/background/backends (celery -A myapp worker, pacificpy worker --workers 4).
    code = block("worker_scaling")
    lines = [line.strip() for line in code.splitlines() if line.strip()]
    assert all(line.startswith("#") for line in lines), code
    assert "# celery -A myapp worker --concurrency=10" in lines
    assert "# arq myapp.WorkerSettings --workers 4" in lines
    ns = run_block("worker_scaling")  # runs, and defines nothing beyond what run_block gives
    assert set(ns) == {"__name__", "__builtins__", "background", "configure_background_tasks"}


def test_queue_sample(executor: LocalExecutor) -> None:
    import threading

    alerts: list[str] = []
    ns = run_block("queue", send_alert=alerts.append)
    assert ns["get_queue_length"]() is None  # as written: "Implementation depends on backend"
    # The user fills the placeholder in with PacificPy's one call:
    ns["get_queue_length"] = configured_queue_length
    gate = threading.Event()

    @background
    def blocked(i: int) -> int:
        gate.wait(timeout=30)
        return i

    ns["check_queue_backlog"]()
    assert alerts == []
    for i in range(1010):
        blocked.delay(i)
    try:
        assert configured_queue_length() >= 1001
        ns["check_queue_backlog"]()
        assert alerts == ["High queue backlog detected"]
    finally:
        gate.set()
    assert executor.join(timeout=30)
    assert configured_queue_length() == 0


def test_resource_sample(executor: LocalExecutor) -> None:
    chunks: list[list[int]] = []

    def chunk_list(data: list[int], size: int) -> Iterator[list[int]]:
        for i in range(0, len(data), size):
            yield data[i : i + size]

    ns = run_block("resources", chunk_list=chunk_list, process_chunk=chunks.append)
    assert completed(ns["memory_efficient_task"].delay(list(range(250)))) is None
    assert [len(c) for c in chunks] == [100, 100, 50]


# -- Best practices -----------------------------------------------------------------------------
def test_task_size_sample(executor: LocalExecutor) -> None:
    ns = run_block("task_size")
    assert completed(ns["send_notification"].delay(1, "hi")) is None
    assert completed(ns["do_everything"].delay({"id": 1})) is None


def test_serialization_sample(executor: LocalExecutor) -> None:
    ns = run_block("serialization")
    assert completed(ns["process_simple_data"].delay({"a": [1, 2]})) is None
    complex_task = ns["process_complex_data"]
    assert complex_task(object()) is None  # a direct call takes anything
    assert completed(complex_task.delay({"plain": "data"})) is None
    # As written the task uses the default JSON serializer: an arbitrary object is refused
    # at the call site, naming the parameter (serializer="pickle" is the opt-in).
    with pytest.raises(TaskSerializationError, match="argument data "):
        complex_task.delay(object())


def test_timeout_sample_with_celery_app() -> None:
    import celery

    celery_app = celery.Celery("guide_timeouts", set_as_current=False)
    ns = run_block("timeouts", app=celery_app)
    task = ns["long_running_task"]
    assert task.soft_time_limit == 30
    assert task.time_limit == 60
    assert task() is None


def test_security_sample(executor: LocalExecutor) -> None:
    seen: list[Any] = []
    ns = run_block(
        "security",
        fetch_user_data=lambda user_id: {"id": user_id, "ssn": "secret"},
        process_data=seen.append,
    )
    handle = ns["process_user_data"].delay(42)
    assert completed(handle) is None
    assert seen == [{"id": 42, "ssn": "secret"}]
    record = get_task_monitor().get(handle.id)
    assert record is not None and "secret" not in (record.args_preview or "")


# -- The complete example -----------------------------------------------------------------------
def test_complete_example(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    users = itertools.count(1)
    ns = run_block("complete_example", create_user_in_database=lambda data: next(users))
    app = ns["app"]
    executor = ns["local_executor"]
    assert get_backend() is executor
    # The tasks sleep 2 s and 5 s; the real timing is proven with uvicorn in
    # tests/test_guide_example_uvicorn.py. Here time runs 100x faster.
    real_sleep = time.sleep
    monkeypatch.setattr(time, "sleep", lambda s: real_sleep(s / 100))
    with TestClient(app) as client:
        r = client.post("/users", json={"name": "Ada"})
        assert r.status_code == 200
        assert r.json() == {"user_id": 1, "message": "User created"}
        r = client.post("/uploads", json={"file_path": "/data/a.csv"})
        assert r.json() == {"message": "File upload received"}
        assert executor.join(timeout=10)
    out = capsys.readouterr().out
    assert "Welcome email sent to user 1" in out
    assert "File processed: /data/a.csv" in out
    assert ns["send_welcome_email"](7) == {"status": "sent", "user_id": 7}


def test_async_handler_delay_is_awaitable(executor: LocalExecutor) -> None:
    """The guide's ``await task.delay(...)`` in handlers: the handle is awaitable."""
    ns = run_block("payment")

    async def main() -> Any:
        handle = await ns["process_payment"].delay({"amount": 1})
        return await handle.result(timeout=10)

    assert asyncio.run(main()) is None
