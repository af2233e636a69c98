"""A Celery worker in PacificPy's worker registry, and its health (worker-side only).

Celery's ``worker_ready`` signal (the consumer is connected and consuming) starts a
:class:`~pacificpy.background.workers.Heartbeat` thread in the worker's main process: it
writes the worker's record (queues, and the ids of the requests its pool runs now, from
``celery.worker.state.active_requests``) every ``heartbeat_interval`` seconds, pings the
broker and the state in between, and tells the worker's :class:`~pacificpy.background.workers.Link`
whether Redis answered. ``worker_shutdown`` (a warm or cold stop) removes the record; a
worker killed outright leaves it to turn lost.

Celery reconnects to its broker by itself; the link only says, after the grace period,
that the worker is not ready, and logs why. ``pacificpy worker --health-port`` reads the
checks added to the backend's :class:`~pacificpy.background.workers.WorkerHealth`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pacificpy.background.workers import DEFAULT_GRACE, Heartbeat, Link

if TYPE_CHECKING:
    from pacificpy.background.backends.celery_backend import CeleryBackgroundBackend

__all__ = ["on_worker_ready", "on_worker_shutdown"]

logger = logging.getLogger("pacificpy.worker")


def _running() -> list[dict[str, str]]:
    """The requests this worker's pool runs now."""
    from celery.worker import state as worker_state

    for _ in range(3):  # the consumer changes the (weak) set meanwhile: look again
        try:
            requests = list(worker_state.active_requests)
        except RuntimeError:
            continue
        break
    else:
        return []
    out = []
    for request in requests:
        info = getattr(request, "delivery_info", None) or {}
        out.append(
            {
                "id": str(request.id),
                "name": str(request.name),
                "queue": str(info.get("routing_key") or "default"),
            }
        )
    return out


def _queues(consumer: Any) -> list[str]:
    try:
        return sorted(q.name for q in consumer.task_consumer.queues)
    except Exception:
        return sorted(consumer.app.amqp.queues.consume_from or ["default"])


def on_worker_ready(backend: CeleryBackgroundBackend, consumer: Any) -> None:
    """The consumer is ready (at start, and again after each reconnection)."""
    health = backend.worker_health
    backend.consuming = True
    if backend.worker_beat is not None:
        return
    grace = health.grace if health is not None else DEFAULT_GRACE
    link = Link(f"Celery worker {getattr(consumer, 'hostname', '')}".strip(), grace)
    beat = Heartbeat(
        backend.state,
        backend=backend.kind,
        queues=_queues(consumer),
        running=_running,
        interval=backend.heartbeat_interval,
        link=link,
        probe_every=min(1.0, grace / 2),
        ping=backend.ping_sync,
    )
    backend.worker_beat = beat
    if health is not None:
        health.add("consuming", lambda: _consuming(backend))
        health.add("backend", link.status)
    beat.start()
    logger.info("worker %s registered (heartbeat every %gs)", beat.id, beat.interval)


def _consuming(backend: CeleryBackgroundBackend) -> tuple[bool, str]:
    if backend.consuming:
        return True, "consuming"
    return False, "not consuming (stopping)"


def on_worker_shutdown(backend: CeleryBackgroundBackend) -> None:
    """The worker stops: say so, stop the heartbeat and remove the record."""
    backend.consuming = False
    beat, backend.worker_beat = backend.worker_beat, None
    if beat is not None:
        beat.stop(deregister=True)
