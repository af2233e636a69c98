"""``pacificpy.testing``: TestClient with lifespan, eager_tasks(), capture_tasks()."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pacificpy import PacificPy
from pacificpy.background import current_task
from pacificpy.background.decorators import background, configure_background_tasks, get_backend
from pacificpy.background.local import get_local_executor
from pacificpy.background.monitor import get_task_monitor
from pacificpy.errors import TaskArgumentError, TaskFailed, TaskSerializationError
from pacificpy.routing import Request
from pacificpy.testing import (
    CapturingBackend,
    EagerBackend,
    TestClient,
    capture_tasks,
    eager_tasks,
)
from pacificpy.types import TaskStatus

ran: list[Any] = []


@background
def send_email(to: str, subject: str, body: str = "") -> str:
    ran.append(("email", to))
    return f"sent to {to}"


@background
async def async_double(x: int) -> int:
    await asyncio.sleep(0)
    return x * 2


@background
def parent_step(x: int) -> str:
    return child_step.delay(x + 1).id


@background
def child_step(x: int) -> dict[str, Any]:
    ctx = current_task()
    assert ctx is not None
    return {"x": x, "parent": ctx.parent_id}


@background(retries=2, retry_backoff=60)
def flaky(fail_times: int) -> int:
    ctx = current_task()
    assert ctx is not None
    if ctx.attempt <= fail_times:
        raise ConnectionError("flaky")
    return ctx.attempt


@background
def broken() -> None:
    raise ValueError("broken task")


class Blob:
    pass


@background(serializer="pickle")
def takes_blob(b: Blob) -> str:
    return type(b).__name__


# -- TestClient ----------------------------------------------------------------------------------
def test_test_client_runs_the_lifespan() -> None:
    executor = get_local_executor(max_workers=1)
    configure_background_tasks(executor)
    app = PacificPy()
    events: list[str] = []
    app.on_startup(lambda: events.append("startup"))
    app.on_shutdown(lambda: events.append("shutdown"))

    @app.get("/")
    async def index(request: Request) -> dict[str, Any]:
        return {"ok": True}

    with TestClient(app) as client:
        assert events == ["startup"]
        assert executor._started
        assert client.get("/").json() == {"ok": True}
    assert events == ["startup", "shutdown"]
    assert not executor._started


# -- eager_tasks ---------------------------------------------------------------------------------
def test_eager_runs_at_delay_and_restores_backend() -> None:
    ran.clear()
    before = get_backend()
    with eager_tasks() as eager:
        assert isinstance(eager, EagerBackend)
        handle = send_email.delay("a@x.org", "Hi")
        assert ran == [("email", "a@x.org")]  # already ran
        assert handle.result_sync(timeout=0) == "sent to a@x.org"
        assert handle.status_sync() is TaskStatus.COMPLETED
        assert async_double.delay(4).result_sync(timeout=0) == 8  # no loop: run to the end
    assert get_backend() is before


def test_eager_keeps_call_site_checks() -> None:
    with eager_tasks():
        with pytest.raises(TaskArgumentError):
            send_email.delay("only-one-arg")  # type: ignore[call-arg]
        with pytest.raises(TaskSerializationError, match="argument to "):
            send_email.delay(object(), "x")  # type: ignore[arg-type]
        with pytest.raises(TaskSerializationError, match="allow_pickle"):
            takes_blob.delay(Blob())
    with eager_tasks(allow_pickle=True):
        assert takes_blob.delay(Blob()).result_sync(timeout=0) == "Blob"


async def test_eager_async_task_inside_running_loop() -> None:
    with eager_tasks():
        handle = async_double.delay(5)
        assert await handle is handle  # waits for the task to finish
        assert await handle.result(timeout=1) == 10
        sync_handle = send_email.delay("b@x.org", "Hi")
        assert await sync_handle.result(timeout=1) == "sent to b@x.org"


def test_eager_chains_link_parent() -> None:
    with eager_tasks() as eager:
        head = parent_step.delay(1)
        child_id = head.result_sync(timeout=0)
        child = eager.wait_result_sync(child_id, timeout=0)
        assert child.value == {"x": 2, "parent": head.id}


def test_eager_retries_run_at_once_and_failures_are_recorded() -> None:
    with eager_tasks() as eager:
        assert flaky.delay(2).result_sync(timeout=0) == 3  # despite a 60 s backoff
        handle = flaky.delay(5)
        with pytest.raises(TaskFailed, match="flaky"):
            handle.result_sync(timeout=0)
        assert [d.task_id for d in eager.dead_letters_sync()] == [handle.id]
        record = get_task_monitor().get(handle.id)
        assert record is not None and record.status is TaskStatus.FAILED


def test_eager_propagate_raises_at_delay() -> None:
    with eager_tasks(propagate=True), pytest.raises(TaskFailed, match="broken task"):
        broken.delay()


def test_eager_idempotency_key_runs_once() -> None:
    ran.clear()
    with eager_tasks():
        a = send_email.apply_async(("c@x.org", "Hi"), idempotency_key="k")
        b = send_email.apply_async(("c@x.org", "Hi"), idempotency_key="k")
    assert a.id == b.id
    assert ran == [("email", "c@x.org")]


def test_eager_in_an_app() -> None:
    app = PacificPy()

    @app.post("/signup")
    async def signup(request: Request) -> dict[str, Any]:
        handle = await send_email.delay((await request.json())["email"], "Welcome")
        return {"result": await handle.result(timeout=1)}

    with eager_tasks(), TestClient(app) as client:
        assert client.post("/signup", json={"email": "d@x.org"}).json() == {
            "result": "sent to d@x.org"
        }


# -- capture_tasks -------------------------------------------------------------------------------
def test_capture_records_without_running() -> None:
    ran.clear()
    with capture_tasks() as captured:
        assert isinstance(captured, CapturingBackend)
        handle = send_email.delay("e@x.org", "Hi", body="text")
        send_email.apply_async(("f@x.org", "Yo"), countdown=5, queue="mail")
    assert ran == []
    call = captured.assert_enqueued(send_email, "e@x.org", "Hi", body="text")
    assert call.id == handle.id
    assert (call.name, call.args, call.kwargs) == (
        send_email.name,
        ("e@x.org", "Hi"),
        {"body": "text"},
    )
    captured.assert_enqueued(send_email)  # any arguments
    later = captured.assert_enqueued(send_email.name, "f@x.org", "Yo")
    assert later.options["countdown"] == 5 and later.options["queue"] == "mail"
    captured.assert_not_enqueued(broken)
    with pytest.raises(AssertionError, match="was not enqueued"):
        captured.assert_enqueued(send_email, "nobody@x.org", "Hi")
    with pytest.raises(AssertionError, match="enqueued 2 time"):
        captured.assert_not_enqueued(send_email)
    assert len(captured.tasks(send_email)) == 2


def test_capture_run_all_runs_chains_and_fills_results() -> None:
    with capture_tasks() as captured:
        head = parent_step.delay(10)
        assert captured.pending == 1
        outcomes = captured.run_all()
        assert [o.status for o in outcomes] == [TaskStatus.COMPLETED] * 2
        assert captured.pending == 0
        child_id = head.result_sync(timeout=0)
        captured.assert_enqueued(child_step, 11)
        assert captured.wait_result_sync(child_id, timeout=0).value == {"x": 11, "parent": head.id}


async def test_capture_arun_all_in_async_code() -> None:
    with capture_tasks() as captured:
        handle = await async_double.delay(7)
        with pytest.raises(RuntimeError, match="arun_all"):
            captured.run_all()
        await captured.arun_all()
        assert await handle.result(timeout=1) == 14


def test_capture_checks_arguments_at_call_site() -> None:
    with capture_tasks() as captured, pytest.raises(TaskArgumentError):
        send_email.delay()  # type: ignore[call-arg]
    assert captured.enqueued == []


# -- isolation from the app's monitor store --------------------------------------------------------
def test_eager_tasks_need_no_redis_for_the_monitor() -> None:
    """An app configured for the Redis monitor store, tested without Redis: the helpers
    record into a fresh in-memory monitor for the block, and give the app's back after."""
    from pacificpy.background.monitor import configure_task_monitor
    from tests.support.net import free_port

    app_monitor = configure_task_monitor(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    app = PacificPy()

    @app.post("/signup")
    async def signup(request: Request) -> dict[str, Any]:
        handle = await send_email.delay((await request.json())["email"], "Welcome")
        return {"id": handle.id, "result": await handle.result(timeout=1)}

    ran.clear()
    with eager_tasks() as eager, TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/signup", json={"email": "e@x.org"})
        assert response.status_code == 200, response.text
        assert response.json()["result"] == "sent to e@x.org"
        record = get_task_monitor().get(response.json()["id"])
        assert record is not None and record.status is TaskStatus.COMPLETED
        assert eager.monitor is get_task_monitor()
    assert ran == [("email", "e@x.org")]
    assert get_task_monitor() is app_monitor  # restored, not closed or replaced


def test_capture_tasks_need_no_redis_for_the_monitor() -> None:
    from pacificpy.background.monitor import configure_task_monitor
    from tests.support.net import free_port

    app_monitor = configure_task_monitor(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with capture_tasks() as captured:
        handle = send_email.delay("f@x.org", "Hi")
        [outcome] = captured.run_all()
        assert outcome.value == "sent to f@x.org"
        record = get_task_monitor().get(handle.id)
        assert record is not None and record.status is TaskStatus.COMPLETED
    assert get_task_monitor() is app_monitor
