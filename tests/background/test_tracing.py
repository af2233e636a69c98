"""OpenTelemetry: the request span is the parent of the task span (local executor)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pacificpy import PacificPy
from pacificpy.background import decorators, execution, tracing
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import get_local_executor
from pacificpy.background.monitor import configure_task_monitor
from pacificpy.errors import TaskFailed
from pacificpy.routing import Request
from pacificpy.testing import TestClient


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable_tracing(tracer_provider=provider)
    ex = get_local_executor(max_workers=2)
    configure_background_tasks(ex)
    yield provider, exporter
    tracing.disable_tracing()
    ex.shutdown_sync(timeout=5)
    provider.shutdown()


@background
def step_two(value: int) -> int:
    return value + 1


@background
def step_one(value: int) -> str:
    return step_two.delay(value).id


@background
async def async_task() -> str:
    return "ok"


@background
def broken() -> None:
    raise ValueError("no")


def finished(exporter: InMemorySpanExporter, name: str, count: int = 1) -> list[ReadableSpan]:
    deadline = time.monotonic() + 10
    while True:
        found = [s for s in exporter.get_finished_spans() if s.name == name]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"no finished span {name!r}"
        time.sleep(0.005)


def test_request_span_is_the_parent_of_the_task_span(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    tracer = provider.get_tracer("tests")
    app = PacificPy()

    @app.post("/signup")
    async def signup(request: Request) -> dict[str, str]:
        with tracer.start_as_current_span("POST /signup"):
            handle = await step_one.delay(41)
            other = await async_task.delay()
        return {"id": handle.id, "async_id": other.id}

    with TestClient(app) as client:
        ids = client.post("/signup").json()
        request_span = finished(exporter, "POST /signup")[0]
        one = finished(exporter, step_one.name)[0]
        two = finished(exporter, step_two.name)[0]
        coro = finished(exporter, async_task.name)[0]

    assert one.parent is not None and one.parent.span_id == request_span.context.span_id
    assert one.context.trace_id == request_span.context.trace_id
    assert one.kind is trace.SpanKind.CONSUMER
    assert one.attributes is not None
    assert one.attributes["pacificpy.task.id"] == ids["id"]
    assert one.attributes["pacificpy.task.attempt"] == 1
    # A chained task is the child of the task that enqueued it.
    assert two.parent is not None and two.parent.span_id == one.context.span_id
    assert two.context.trace_id == request_span.context.trace_id
    assert coro.parent is not None and coro.parent.span_id == request_span.context.span_id


def test_task_outside_any_span_is_a_root_span(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    _, exporter = spans
    step_two.delay(1).result_sync(5)
    span = finished(exporter, step_two.name)[0]
    assert span.parent is None


def test_failure_is_recorded_on_the_span(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    _, exporter = spans
    with pytest.raises(TaskFailed):
        broken.delay().result_sync(5)
    span = finished(exporter, broken.name)[0]
    assert span.status.status_code is trace.StatusCode.ERROR
    assert any(e.name == "exception" for e in span.events)


def test_enable_is_idempotent_and_disable_removes_the_hooks() -> None:
    tracing.enable_tracing(tracer_provider=TracerProvider())
    tracing.enable_tracing(tracer_provider=TracerProvider())
    try:
        assert decorators.trace_injectors.count(tracing._inject) == 1
        assert execution.run_wrappers.count(tracing._task_span) == 1
        assert tracing.tracing_enabled()
    finally:
        tracing.disable_tracing()
    assert tracing._inject not in decorators.trace_injectors
    assert tracing._task_span not in execution.run_wrappers
    assert not tracing.tracing_enabled()


def test_configure_task_monitor_enables_tracing_only_with_a_real_provider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    try:
        configure_task_monitor()
        assert not tracing.tracing_enabled()  # the default (proxy) provider: stay off
        monkeypatch.setattr(trace, "get_tracer_provider", lambda: TracerProvider())
        configure_task_monitor()
        assert tracing.tracing_enabled()
    finally:
        tracing.disable_tracing()
