"""Prometheus metrics of background tasks, served by ``app.include_metrics(path="/metrics")``.

This module holds the collector (it reads the monitor and the backend, and speaks no HTTP);
the route that serves it is :mod:`pacificpy.web.metrics`. Exposed, computed at scrape time
from the configured monitor's counters (so with the Redis monitor store they cover every
process sharing it):

=================================== ========= ==========================================
``pacificpy_tasks_total``           counter   tasks entering a state, by ``name`` and
                                              ``status`` (``queued`` counts enqueues;
                                              then ``completed``, ``failed``,
                                              ``retrying``, ``dead``, ``abandoned``)
``pacificpy_tasks_throttled_total`` counter   starts a ``concurrency=`` or ``rate_limit=``
                                              held back (each deferred once more), by
                                              ``name``
                                              ``retrying``, ``dead``, ``abandoned``,
                                              ``cancelled``)
``pacificpy_task_duration_seconds`` histogram run time of tasks that completed or failed
                                              for good (their last attempt), by ``name``
``pacificpy_queue_length``          gauge     tasks waiting, by ``queue``, read from the
                                              configured backend for each queue seen
``pacificpy_queue_oldest_task_age_seconds`` gauge age of the oldest task waiting (due,
                                              not running) in each ``queue``; 0 when
                                              none waits; absent where the transport
                                              cannot tell (Celery on AMQP)
``pacificpy_tasks_in_flight``       gauge     tasks running, by ``queue``, on the live
                                              workers of the registry (as of their
                                              last heartbeats)
``pacificpy_workers``               gauge     workers in the registry, by ``state``
                                              (``live``, ``lost``)
``<name>`` (user metric)            summary   ``record_metric(name, value, **labels)``:
                                              ``<name>_count`` and ``<name>_sum``
=================================== ========= ==========================================

Task arguments and results never appear here. Metrics use a registry of their own (not
prometheus-client's global one), so several apps, tests or reconfigurations stay apart.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from pacificpy.background.monitor import DURATION_BUCKETS, get_task_monitor

__all__ = ["TaskMetricsCollector", "make_registry", "metric_name"]

logger = logging.getLogger(__name__)

_BAD_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_:]")
_BAD_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(name: str) -> str:
    """``name`` made a valid Prometheus metric name (invalid characters become ``_``)."""
    clean = _BAD_NAME_CHARS.sub("_", name) or "_"
    return "_" + clean if clean[0].isdigit() else clean


def _label_name(name: str) -> str:
    clean = _BAD_LABEL_CHARS.sub("_", name) or "label"
    if clean[0].isdigit():
        clean = "_" + clean
    return "l" + clean if clean.startswith("__") else clean  # "__" names are reserved


class TaskMetricsCollector(Collector):
    """Collects the task metrics from whichever monitor and backend are configured now."""

    def __init__(self, *, queue_lengths: bool = True) -> None:
        self.queue_lengths = queue_lengths

    def collect(self) -> Iterator[Metric]:
        snap = get_task_monitor().metrics()
        tasks = CounterMetricFamily(
            "pacificpy_tasks",
            "Background tasks entering a state, by task name and status.",
            labels=["name", "status"],
        )
        throttled = CounterMetricFamily(
            "pacificpy_tasks_throttled",
            "Task starts held back by a concurrency or rate limit, by task name.",
            labels=["name"],
        )
        for (name, status), count in sorted(snap.totals.items()):
            if status == "throttled":
                throttled.add_metric([name], count)
            else:
                tasks.add_metric([name, status], count)
        yield tasks
        yield throttled

        hist = HistogramMetricFamily(
            "pacificpy_task_duration_seconds",
            "Run time of finished tasks (their last attempt), by task name.",
            labels=["name"],
        )
        for name, (buckets, total, count) in sorted(snap.durations.items()):
            cumulative: list[tuple[str, float]] = []
            running = 0
            for bound, n in zip(DURATION_BUCKETS, buckets, strict=False):
                running += n
                cumulative.append((repr(float(bound)), running))
            cumulative.append(("+Inf", count))
            hist.add_metric([name], cumulative, total)
        yield hist

        if self.queue_lengths:
            yield from autoscaling_metrics(snap.queues)

        users: dict[str, Metric] = {}
        for (name, labels), (count, total, _last) in sorted(snap.user.items()):
            metric = metric_name(name)
            if metric.startswith("pacificpy_"):
                continue  # never shadow a built-in metric
            family = users.get(metric)
            if family is None:
                family = users[metric] = Metric(
                    metric, f"User metric {name!r} (record_metric).", "summary"
                )
            label_map = {_label_name(k): v for k, v in labels}
            family.add_sample(metric + "_count", label_map, count)
            family.add_sample(metric + "_sum", label_map, total)
        yield from users.values()


def autoscaling_metrics(queues: set[str]) -> Iterator[Metric]:
    """Queue lengths, oldest-task ages, tasks in flight and workers: what an autoscaler
    reads. ``queues`` are the queues the monitor saw; the registry's workers add theirs."""
    from pacificpy.background.decorators import get_backend
    from pacificpy.background.workers import in_flight, list_workers

    backend = get_backend()
    try:
        workers = list_workers(backend.state)
    except Exception as exc:
        logger.warning("could not read the worker registry: %s", exc)
        workers = None
    names = set(queues) | {"default"}
    for w in workers or ():
        names.update(q for q in w.queues if q != "*")
    names_sorted = sorted(names)
    lengths = GaugeMetricFamily(
        "pacificpy_queue_length", "Tasks waiting in each queue.", labels=["queue"]
    )
    ages = GaugeMetricFamily(
        "pacificpy_queue_oldest_task_age_seconds",
        "Age of the oldest task waiting in each queue (due, not running); 0 if none.",
        labels=["queue"],
    )
    now = time.time()
    for queue in names_sorted:
        try:
            lengths.add_metric([queue], backend.queue_length_sync(queue))
        except Exception as exc:
            logger.warning("could not read the length of queue %s: %s", queue, exc)
        try:
            due = backend.oldest_waiting_sync(queue)
        except NotImplementedError:
            continue
        except Exception as exc:
            logger.warning("could not read the oldest task of queue %s: %s", queue, exc)
            continue
        ages.add_metric([queue], max(0.0, now - due) if due is not None else 0.0)
    yield lengths
    yield ages
    if workers is None:
        return
    flying = in_flight(workers, now)
    running = GaugeMetricFamily(
        "pacificpy_tasks_in_flight",
        "Tasks running on live workers, by queue (as of their last heartbeats).",
        labels=["queue"],
    )
    for queue in sorted(names | set(flying)):
        running.add_metric([queue], flying.get(queue, 0))
    yield running
    states = GaugeMetricFamily(
        "pacificpy_workers", "Workers in the registry, live or lost.", labels=["state"]
    )
    lost = sum(1 for w in workers if w.lost(now))
    states.add_metric(["live"], len(workers) - lost)
    states.add_metric(["lost"], lost)
    yield states


def make_registry(*, queue_lengths: bool = True) -> CollectorRegistry:
    """A fresh registry holding a :class:`TaskMetricsCollector` (and nothing else)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TaskMetricsCollector(queue_lengths=queue_lengths))
    return registry
