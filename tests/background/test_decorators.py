"""``@background`` and ``configure_background_tasks`` (SPEC §3.1, §3.2)."""

from __future__ import annotations

import datetime as dt

import pytest

from pacificpy.background import BackgroundTask, registry
from pacificpy.background.decorators import (
    background,
    configure_background_tasks,
    get_backend,
    reset_background_tasks,
)
from pacificpy.background.local import LocalExecutor, get_local_executor
from pacificpy.background.monitor import get_task_monitor
from pacificpy.errors import ConfigurationError
from pacificpy.types import TaskStatus


@background
def bare(x: int) -> int:
    return x * 2


@background(name="custom.name", queue="emails", retries=2, timeout=5)
def configured(x: int) -> int:
    return x + 1


@background
async def async_bare(x: int) -> int:
    return x * 3


def test_bare_and_parametrised_declarations() -> None:
    assert isinstance(bare, BackgroundTask)
    assert bare.name == f"{__name__}.bare"
    assert configured.name == "custom.name"
    assert configured.spec.queue == "emails"
    assert configured.spec.retry.max_attempts == 3
    assert configured.spec.timeout == 5
    assert registry.get("custom.name") is configured.spec
    assert bare.__name__ == "bare" and bare.__wrapped__ is bare.fn  # type: ignore[attr-defined]


async def test_direct_calls_run_inline() -> None:
    assert bare(2) == 4
    assert await async_bare(2) == 6
    assert get_task_monitor().list() == []  # nothing was enqueued


def test_same_name_for_another_function_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match=r"custom\.name"):

        @background(name="custom.name")
        def other(x: int) -> int:
            return x


def test_bad_options_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="serializer"):
        background(serializer="yaml")
    with pytest.raises(ConfigurationError, match="timeout"):
        background(timeout=0)
    with pytest.raises(ConfigurationError):
        background(retries=-1)
    with pytest.raises(ConfigurationError, match="already a background task"):
        background(bare)  # type: ignore[call-overload]


def test_countdown_and_eta_together_are_refused(executor: LocalExecutor) -> None:
    with pytest.raises(ConfigurationError, match="countdown or eta"):
        bare.apply_async((1,), countdown=1, eta=dt.datetime.now(dt.timezone.utc))


def test_configure_needs_a_backend() -> None:
    with pytest.raises(ConfigurationError, match="BackgroundBackend"):
        configure_background_tasks(object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="16 bytes"):
        configure_background_tasks(get_local_executor(1), signing_key="short")


def test_default_backend_is_a_local_executor_made_on_first_use() -> None:
    backend = get_backend()
    assert isinstance(backend, LocalExecutor)
    assert get_backend() is backend
    assert bare.delay(4).result_sync(timeout=10) == 8
    reset_background_tasks()
    assert get_backend() is not backend


def test_task_declared_after_configuration_runs(executor: LocalExecutor) -> None:
    @background
    def late(x: int) -> int:
        return -x

    assert late.delay(3).result_sync(timeout=10) == -3


def test_reconfiguring_swaps_backends_for_later_calls(executor: LocalExecutor) -> None:
    first = bare.delay(1)
    other = get_local_executor(1)
    configure_background_tasks(other)
    try:
        second = bare.delay(2)
        assert second.result_sync(timeout=10) == 4
        assert executor.wait_result_sync(first.id, timeout=10).value == 2
    finally:
        other.shutdown_sync(timeout=5)


def test_apply_async_options(executor: LocalExecutor) -> None:
    h = bare.apply_async(kwargs={"x": 5}, task_id="my-id", queue="other")
    assert h.id == "my-id"
    assert h.result_sync(timeout=10) == 10
    record = get_task_monitor().get("my-id")
    assert record is not None and record.queue == "other"


def test_duplicate_idempotent_call_keeps_the_first_record(executor: LocalExecutor) -> None:
    h1 = bare.apply_async((1,), idempotency_key="once")
    assert h1.id.startswith("ik-")
    assert h1.result_sync(timeout=10) == 2
    h2 = bare.apply_async((1,), idempotency_key="once")
    assert h2.id == h1.id
    assert get_task_monitor().get(h1.id).status is TaskStatus.COMPLETED  # type: ignore[union-attr]
    assert h2.status_sync() is TaskStatus.COMPLETED
    other_key = bare.apply_async((1,), idempotency_key="twice")
    assert other_key.id != h1.id


async def test_handle_is_awaitable_and_typed(executor: LocalExecutor) -> None:
    handle = bare.delay(21)
    assert await handle is handle
    assert await handle.result(timeout=10) == 42
    assert await handle.status() is TaskStatus.COMPLETED
    assert repr(handle).startswith("<TaskHandle")
