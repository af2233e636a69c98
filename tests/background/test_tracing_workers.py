"""OpenTelemetry across processes: the request span (test process) is the parent of the task
span made in a real Celery or ARQ worker process, and a chained task's span is the child of
the task that enqueued it.

The workers (tests/tracing_apps/) write their finished spans as JSON lines to a file; the test
process keeps its own spans in the SDK's in-memory exporter.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from arq.connections import RedisSettings
from celery import Celery
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pacificpy.background import tracing
from pacificpy.background.backend import BackgroundBackend, CeleryBackgroundBackend
from pacificpy.background.backends.arq_backend import ARQBackgroundBackend
from pacificpy.background.decorators import configure_background_tasks
from tests.background.backends._arq_procs import ARQ, running
from tests.conformance.harness import SIGNING_KEY
from tests.conformance.harness_celery import CeleryWorker
from tests.support.redis_server import RedisServer
from tests.tracing_apps.spans import SPAN_FILE_ENV
from tests.tracing_apps.tasks import traced_add, traced_parent

pytestmark = pytest.mark.redis

#: Redis databases of these tests' own (the conformance workers use 0 and 1).
CELERY_DB = 11
ARQ_DB = 12
RESULT_TIMEOUT = 30.0


@dataclass
class Worker:
    """A running worker process of one backend and the file its spans go to."""

    name: str
    make_backend: Callable[[], BackgroundBackend]
    span_file: Path


def _db_url(redis_server: RedisServer, db: int) -> str:
    url = f"{redis_server.url.rpartition('/')[0]}/{db}"
    redis.Redis.from_url(url).flushdb()
    return url


def _celery_worker(redis_server: RedisServer, span_file: Path) -> Iterator[Worker]:
    url = _db_url(redis_server, CELERY_DB)
    celery_app = Celery("pacificpy-tracing", broker=url)
    worker = CeleryWorker(url, concurrency=1, app="tests.tracing_apps.celery_app")
    worker.env[SPAN_FILE_ENV] = str(span_file)
    try:
        worker.start().wait_ready()
        yield Worker("celery", lambda: CeleryBackgroundBackend(celery_app=celery_app), span_file)
    finally:
        worker.close()


def _arq_worker(redis_server: RedisServer, span_file: Path, log: Path) -> Iterator[Worker]:
    url = _db_url(redis_server, ARQ_DB)
    env = {"PACIFICPY_TEST_REDIS": url, SPAN_FILE_ENV: str(span_file)}
    with running([*ARQ, "tests.tracing_apps.arq_app.WorkerSettings"], log, env):
        yield Worker(
            "arq",
            lambda: ARQBackgroundBackend(
                redis_settings=RedisSettings.from_dsn(url), shutdown_timeout=5.0
            ),
            span_file,
        )


@pytest.fixture(scope="module", params=["celery", "arq"])
def worker(
    request: pytest.FixtureRequest,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Worker]:
    """One real worker process per backend, for every test of this module."""
    if not redis_server.is_running():
        redis_server.start()
    tmp = tmp_path_factory.mktemp(f"tracing-{request.param}")
    span_file = tmp / "spans.jsonl"
    if request.param == "celery":
        yield from _celery_worker(redis_server, span_file)
    else:
        yield from _arq_worker(redis_server, span_file, tmp / "worker.log")


@pytest.fixture
def spans(worker: Worker) -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """Tracing on in the test process (in-memory spans), the worker's backend configured."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable_tracing(tracer_provider=provider)
    backend = worker.make_backend()
    configure_background_tasks(backend, signing_key=SIGNING_KEY)
    yield provider, exporter
    tracing.disable_tracing()
    backend.shutdown_sync(timeout=5)
    provider.shutdown()


def worker_span(worker: Worker, task_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """The span the worker finished for ``task_id`` (polled from its span file)."""
    deadline = time.monotonic() + timeout
    while True:
        if worker.span_file.exists():
            for line in worker.span_file.read_text().splitlines():
                span = json.loads(line)
                if span["attributes"].get("pacificpy.task.id") == task_id:
                    return span
        assert time.monotonic() < deadline, f"the {worker.name} worker wrote no span for {task_id}"
        time.sleep(0.02)


def request_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "request"]
    return span


def ids(span: ReadableSpan) -> tuple[str, str]:
    """(trace_id, span_id) of a span of the test process, as the worker file writes them."""
    ctx = span.get_span_context()
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


async def test_request_span_is_the_parent_of_the_worker_task_span(
    worker: Worker, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    with provider.get_tracer("tests").start_as_current_span("request"):
        handle = await traced_add.delay(2, 3)
    assert await handle.result(timeout=RESULT_TIMEOUT) == 5

    trace_id, span_id = ids(request_span(exporter))
    task = worker_span(worker, handle.id)
    assert task["pid"] != os.getpid()  # made in the worker process
    assert task["name"] == traced_add.name
    assert task["trace_id"] == trace_id
    assert task["parent_span_id"] == span_id
    assert task["attributes"]["pacificpy.task.attempt"] == 1
    assert task["attributes"]["pacificpy.task.queue"] == "default"


async def test_chained_task_span_is_the_child_of_the_parent_task_span(
    worker: Worker, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    with provider.get_tracer("tests").start_as_current_span("request"):
        handle = await traced_parent.delay(7)
    child_id = await handle.result(timeout=RESULT_TIMEOUT)

    trace_id, span_id = ids(request_span(exporter))
    parent = worker_span(worker, handle.id)
    child = worker_span(worker, child_id)
    assert parent["parent_span_id"] == span_id
    assert child["name"] == traced_add.name
    assert child["parent_span_id"] == parent["span_id"]
    assert child["trace_id"] == parent["trace_id"] == trace_id
