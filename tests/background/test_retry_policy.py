"""Retry backoff: SPEC §3.4's formula exactly, its cap, and full jitter over ``[0, that]``.

The formula is ``min(retry_backoff_max, retry_backoff * 2**(attempt-1))``; with
``retry_jitter`` on, the wait is a uniform draw from ``[0, formula]``. The tests go through
``@background`` options and ``execution.conclude`` (the decision every backend applies), not
only through ``RetryPolicy``, so a change anywhere on that path shows.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

import pytest

from pacificpy.background import execution
from pacificpy.background.decorators import background
from pacificpy.background.retry import RetryPolicy
from pacificpy.background.task import TaskEnvelope
from pacificpy.errors import Retry


class Flaky(Exception):
    pass


def _retry_delay(task: Any, attempt: int, exc: BaseException | None = None) -> float:
    """The wait ``conclude`` decides after ``attempt`` of ``task`` raised ``exc``."""
    env = TaskEnvelope(
        task_id=f"t-{attempt}", task_name=task.name, attempt=attempt, enqueued_at=time.time()
    )
    decision = execution.conclude(env, task.spec, time.perf_counter(), exc=exc or Flaky("x"))
    assert decision.kind == "retry", decision
    assert decision.next_envelope is not None
    assert decision.next_envelope.attempt == attempt + 1
    return decision.delay


def test_backoff_doubles_per_attempt_without_jitter() -> None:
    @background(retries=20, retry_backoff=0.5, retry_backoff_max=1000.0, retry_jitter=False)
    def doubling() -> None: ...

    got = [_retry_delay(doubling, attempt) for attempt in range(1, 8)]
    assert got == [0.5 * 2 ** (attempt - 1) for attempt in range(1, 8)]
    assert got == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0]


def test_backoff_is_capped_by_retry_backoff_max() -> None:
    @background(retries=50, retry_backoff=1.0, retry_backoff_max=10.0, retry_jitter=False)
    def capped() -> None: ...

    got = {attempt: _retry_delay(capped, attempt) for attempt in (1, 2, 3, 4, 5, 6, 30, 50)}
    assert got == {1: 1.0, 2: 2.0, 3: 4.0, 4: 8.0, 5: 10.0, 6: 10.0, 30: 10.0, 50: 10.0}


def test_backoff_of_the_defaults() -> None:
    policy = RetryPolicy(retries=3, jitter=False)  # retry_backoff=1, retry_backoff_max=600
    assert [policy.delay(n) for n in range(1, 12)] == [
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 600.0,
    ]  # fmt: skip


def test_retry_countdown_wins_over_the_backoff() -> None:
    @background(retries=3, retry_backoff=100.0, retry_jitter=True)
    def explicit() -> None: ...

    assert _retry_delay(explicit, 1, Retry(countdown=2.5)) == 2.5
    assert _retry_delay(explicit, 2, Retry(countdown=-1)) == 0.0


@pytest.mark.parametrize("attempt", [1, 3, 6])
def test_full_jitter_spans_zero_to_the_formula(attempt: int) -> None:
    @background(retries=10, retry_backoff=2.0, retry_backoff_max=40.0, retry_jitter=True)
    def jittered() -> None: ...

    ceiling = min(40.0, 2.0 * 2 ** (attempt - 1))  # 2, 8, 40 (capped)
    random.seed(1234 + attempt)  # reproducible, yet the code's own random draws
    samples = [_retry_delay(jittered, attempt) for _ in range(2000)]
    assert all(0.0 <= s <= ceiling for s in samples), (min(samples), max(samples), ceiling)
    assert len(set(samples)) > 1900, "jitter must draw a new wait each time"
    # Uniform on [0, ceiling]: reaches both ends of the range, centred on half of it.
    assert min(samples) < 0.02 * ceiling
    assert max(samples) > 0.98 * ceiling
    assert abs(statistics.fmean(samples) - ceiling / 2) < 0.05 * ceiling
    below_half = sum(s < ceiling / 2 for s in samples) / len(samples)
    assert 0.45 < below_half < 0.55


def test_jitter_draws_from_the_random_module_uniformly() -> None:
    policy = RetryPolicy(retries=5, backoff=3.0, backoff_max=100.0, jitter=True)
    random.seed(99)
    got = [policy.delay(3) for _ in range(5)]
    random.seed(99)
    assert got == [random.uniform(0.0, 12.0) for _ in range(5)]


def test_no_retry_after_the_last_attempt() -> None:
    @background(retries=2, retry_backoff=1.0, retry_jitter=False)
    def twice() -> None: ...

    env = TaskEnvelope(task_id="last", task_name=twice.name, attempt=3, enqueued_at=time.time())
    decision = execution.conclude(env, twice.spec, time.perf_counter(), exc=Flaky("x"))
    assert decision.kind == "failed"
