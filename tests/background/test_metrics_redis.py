"""``/metrics`` on the Redis monitor store says what docs/monitoring.md says it does: every
``status`` label is one the page lists, and the duration histogram counts what the page
says (one observation per task that completed or failed for good)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from pacificpy import PacificPy
from pacificpy.background import current_task
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import get_local_executor
from pacificpy.background.monitor import (
    RedisMonitorStore,
    configure_task_monitor,
    record_task_start,
    update_task_status,
)
from pacificpy.errors import TaskFailed
from pacificpy.testing import TestClient

pytestmark = pytest.mark.redis

DOCS = Path(__file__).resolve().parents[2] / "docs" / "monitoring.md"
WAIT = 30.0


@background
def mr_ok(n: int) -> int:
    return n


@background(retries=1, retry_backoff=0.01, retry_jitter=False)
def mr_flaky() -> int:
    ctx = current_task()
    assert ctx is not None
    if ctx.attempt == 1:
        raise ConnectionError("first attempt fails")
    return ctx.attempt


@background(retries=1, retry_backoff=0.01, retry_jitter=False)
def mr_broken() -> None:
    raise ValueError("always")


def documented_statuses() -> set[str]:
    """The statuses the metrics table of docs/monitoring.md lists for pacificpy_tasks_total."""
    (row,) = [
        line
        for line in DOCS.read_text().splitlines()
        if line.startswith("| `pacificpy_tasks_total`")
    ]
    labels = row.split("`status`", 1)[1]
    return set(re.findall(r"`([a-z]+)`", labels))


def documented_histogram() -> str:
    (row,) = [
        line
        for line in DOCS.read_text().splitlines()
        if line.startswith("| `pacificpy_task_duration_seconds`")
    ]
    return row


@pytest.fixture
def redis_monitor(redis_url: str) -> Iterator[None]:
    prefix = "mr" + uuid.uuid4().hex[:10]
    configure_task_monitor(RedisMonitorStore(redis_url, prefix=prefix))
    executor = get_local_executor(2)
    configure_background_tasks(executor)
    yield
    executor.shutdown_sync(timeout=5)
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def test_every_status_label_is_documented_and_the_histogram_counts_tasks(
    redis_monitor: None,
) -> None:
    app = PacificPy()
    app.include_metrics()
    with TestClient(app) as client:
        assert mr_ok.delay(1).result_sync(WAIT) == 1
        assert mr_flaky.delay().result_sync(WAIT) == 2  # one retried attempt, then success
        with pytest.raises(TaskFailed):
            mr_broken.delay().result_sync(WAIT)  # two attempts, failed for good
        record_task_start("by-hand-1", "mr_by_hand")  # hand-reported, as in the guide
        update_task_status("by-hand-1", "completed", "done")
        text = client.get("/metrics").text

    statuses: set[str] = set()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "pacificpy_tasks_total":
                statuses.add(sample.labels["status"])
            if sample.name == "pacificpy_task_duration_seconds_count":
                counts[sample.labels["name"]] = sample.value
    documented = documented_statuses()
    assert documented >= {"queued", "completed", "failed", "retrying"}
    assert statuses <= documented, f"undocumented: {statuses - documented}"
    assert "running" not in statuses
    # One observation per task that completed or failed for good; retried attempts and
    # hand-reported tasks are not observed, as the page says.
    assert counts == {mr_ok.name: 1, mr_flaky.name: 1, mr_broken.name: 1}
    row = documented_histogram()
    assert "failed for good" in row and "retried" in row, row
