"""``/metrics``: task counters, duration histogram, queue lengths, user metrics, token."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pacificpy import PacificPy
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import LocalExecutor, get_local_executor
from pacificpy.background.metrics import make_registry, metric_name
from pacificpy.background.monitor import configure_task_monitor, record_metric
from pacificpy.errors import TaskFailed
from pacificpy.testing import TestClient


@pytest.fixture
def executor() -> Iterator[LocalExecutor]:
    ex = get_local_executor(max_workers=1)
    configure_background_tasks(ex)
    yield ex
    ex.shutdown_sync(timeout=5)


@background
def charge(card: str, amount: int) -> str:
    return "charged"


@background
def fail_charge(card: str) -> None:
    raise RuntimeError("declined")


@background
def timed_task(data: dict):
    # The guide's "Metrics Collection" sample, as written.
    start_time = time.time()

    try:
        result = {"processed": data}
        duration = time.time() - start_time
        # Record metrics
        record_metric("task_duration", duration)
        return result
    except Exception as e:  # noqa: F841
        duration = time.time() - start_time
        record_metric("task_failure_duration", duration)
        raise


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def make_app(token: str | None = None) -> PacificPy:
    app = PacificPy()
    app.include_metrics(token=token)
    return app


def test_task_counters_histogram_queue_and_user_metrics(executor: LocalExecutor) -> None:
    configure_task_monitor()
    with TestClient(make_app()) as client:
        for _ in range(3):
            charge.delay("4242-4242-SECRET", 10).result_sync(5)
        with pytest.raises(TaskFailed):
            fail_charge.delay("4242-4242-SECRET").result_sync(5)
        timed_task.delay({"a": 1}).result_sync(5)
        record_metric("orders.placed", 2, region="eu")

        resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert "SECRET" not in text and "4242" not in text  # no arguments, ever
    s = samples(text)
    assert s[("pacificpy_tasks_total", (("name", charge.name), ("status", "queued")))] == 3
    assert s[("pacificpy_tasks_total", (("name", charge.name), ("status", "completed")))] == 3
    assert s[("pacificpy_tasks_total", (("name", fail_charge.name), ("status", "failed")))] == 1
    assert s[("pacificpy_task_duration_seconds_count", (("name", charge.name),))] == 3
    inf = ("pacificpy_task_duration_seconds_bucket", (("le", "+Inf"), ("name", charge.name)))
    assert s[inf] == 3
    assert s[("pacificpy_queue_length", (("queue", "default"),))] == 0
    # The guide's record_metric("task_duration", duration) shows up as a summary.
    assert s[("task_duration_count", ())] == 1
    assert ("task_duration_sum", ()) in s
    assert s[("orders_placed_count", (("region", "eu"),))] == 1
    assert s[("orders_placed_sum", (("region", "eu"),))] == 2


def test_queue_length_is_read_from_the_backend(executor: LocalExecutor) -> None:
    release = threading.Event()

    @background(name="tests.metrics.block", queue="slow")
    def block() -> None:
        release.wait(10)

    handles = [block.delay() for _ in range(3)]  # one runs, two wait (max_workers=1)
    try:
        deadline = time.monotonic() + 10
        while executor.queue_length_sync("slow") != 2:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        # (no TestClient here: its lifespan would wait for the blocked tasks at exit)
        s = samples(prometheus_client.generate_latest(make_registry()).decode())
        assert s[("pacificpy_queue_length", (("queue", "slow"),))] == 2
        assert s[("pacificpy_queue_length", (("queue", "default"),))] == 0
    finally:
        release.set()
        for h in handles:
            h.result_sync(5)


def test_token_is_required_when_set() -> None:
    with TestClient(make_app(token="m3trics-token")) as client:
        missing = client.get("/metrics")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 403
        assert client.get("/metrics?token=m3trics-token").status_code == 401  # header only
        ok = client.get("/metrics", headers={"Authorization": "Bearer m3trics-token"})
        assert (ok.status_code == 200 and "pacificpy_tasks_total" in ok.text) or ok.text


def test_dedicated_registry_not_the_global_one() -> None:
    record_metric("only_here", 1)
    make_app()
    names = {m.name for m in prometheus_client.REGISTRY.collect()}
    assert not any(n.startswith("pacificpy_") or n == "only_here" for n in names)
    reg = make_registry(queue_lengths=False)
    text = prometheus_client.generate_latest(reg).decode()
    assert "only_here_count 1.0" in text and "pacificpy_queue_length" not in text


def test_metrics_follow_reconfiguration() -> None:
    registry = make_registry(queue_lengths=False)
    record_metric("before", 1)
    assert "before_count" in prometheus_client.generate_latest(registry).decode()
    configure_task_monitor()
    record_metric("after", 1)
    text = prometheus_client.generate_latest(registry).decode()
    assert "after_count" in text and "before_count" not in text


def test_openmetrics_negotiation() -> None:
    with TestClient(make_app()) as client:
        resp = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert resp.headers["content-type"].startswith("application/openmetrics-text")
    assert resp.text.rstrip().endswith("# EOF")


@pytest.mark.parametrize(
    ("raw", "clean"), [("task_duration", "task_duration"), ("a.b-c", "a_b_c"), ("9x", "_9x")]
)
def test_metric_names_are_sanitised(raw: str, clean: str) -> None:
    assert metric_name(raw) == clean


def test_user_metric_cannot_shadow_builtin() -> None:
    record_metric("pacificpy_tasks", 1)
    text = prometheus_client.generate_latest(make_registry(queue_lengths=False)).decode()
    assert "pacificpy_tasks_count" not in text
