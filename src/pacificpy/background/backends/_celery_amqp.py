"""The Celery backend on RabbitMQ: publishing with confirms, delays without the ETA trap,
and queue length.

Publishing. Each message goes through kombu's producer pool (``app.producer_pool``, the
pool Celery's own ``send_task`` uses), on connections opened with publisher confirms
(``broker_transport_options["confirm_publish"]``, set by the backend unless the user set
it): ``.delay()`` returns once RabbitMQ has taken the message, and raises ``EnqueueError``
if it refused it. The frame is Celery protocol 2, built by PacificPy (the headers of
:func:`~._celery_publish.celery_headers`), so a stock ``celery worker`` runs it.

Delays (``countdown``, ``eta``, retry back-off). Celery publishes a delayed task with an
ETA header; the worker takes it at once and holds it, unacknowledged, in its memory until
it is due (the "ETA trap": the worker's memory fills, prefetch limits stop applying, and
on Redis a delay past the visibility timeout is delivered twice). PacificPy never sends an
ETA to RabbitMQ. A delayed message goes to a **delay queue** with no consumers, declared
with a message TTL equal to the delay and a dead-letter route back to its queue; RabbitMQ
moves it there when the TTL expires, and a worker sees it only when it is due. Every
message of one delay queue has the same TTL, so the queue's head is always the next to
expire (a per-message TTL on one shared queue would hold a short delay behind a long
one). Delays are rounded **up** to :data:`DELAY_BITS` significant bits of milliseconds
(at most 1/32 late, never early), which bounds the number of delay queues; each deletes
itself (``x-expires``) once unused. Why this and not delayed messages kept in the state
store and published when due: nothing has to poll, no process has to be alive for a
delayed task to become due, and the message stays in the broker, durable, from the
first publish on.

Queue length is a passive ``queue.declare`` on a channel of a pooled connection (a queue
nobody declared yet holds 0). Delayed messages wait in their delay queues and are not
counted.
"""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING, Any

from pacificpy.background.backends._celery_publish import celery_body, celery_headers
from pacificpy.background.task import Message

if TYPE_CHECKING:
    from celery import Celery
    from kombu import Queue

__all__ = [
    "DELAY_BITS",
    "DELAY_QUEUE_PREFIX",
    "AmqpPublisher",
    "delay_ms",
    "delay_queue_name",
]

#: Delays are rounded up to this many significant bits of milliseconds.
DELAY_BITS = 6
#: Name of the delay queue of queue ``q`` for ``n`` ms: ``pacificpy.delay.q.n``.
DELAY_QUEUE_PREFIX = "pacificpy.delay."
#: A delay queue deletes itself this long after it was last declared, beyond its delay.
_EXPIRES_MARGIN_MS = 300_000
#: A publisher declares a delay queue again when its last declare is older than this (so
#: the queue cannot expire while a message it took is still waiting: the margin covers it).
_REDECLARE_S = 60.0
#: kombu's retry policy for one publish: one more try on a fresh connection (a pooled
#: connection the broker closed while idle), no waiting; then the error is the caller's.
_RETRY_ONCE = (("max_retries", 1), ("interval_start", 0), ("interval_step", 0), ("interval_max", 0))


def delay_ms(delay: float) -> int:
    """``delay`` seconds in milliseconds, rounded up to :data:`DELAY_BITS` bits."""
    ms = max(1, math.ceil(delay * 1000))
    step = 1 << max(0, ms.bit_length() - DELAY_BITS)
    return -(-ms // step) * step


def delay_queue_name(queue: str, ms: int) -> str:
    """The delay queue that holds messages for ``queue`` for ``ms`` milliseconds."""
    return f"{DELAY_QUEUE_PREFIX}{queue}.{ms}"


class AmqpPublisher:
    """Publishes PacificPy messages to RabbitMQ through the app's producer pool.

    Args:
        app: the Celery app (its producer pool, connection pool and queue table).
        timeout: seconds a publish waits for the broker's confirm.
    """

    def __init__(self, app: Celery, timeout: float) -> None:
        self.app = app
        self.timeout = timeout
        self._declared: dict[str, float] = {}  # delay queue -> monotonic time declared
        self._lock = threading.Lock()

    # -- queues ----------------------------------------------------------------------------
    def queue(self, name: str) -> Queue:
        """Celery's queue ``name``: the user's ``task_queues`` entry, else the one Celery
        creates for a missing queue (what a worker declares when it consumes it)."""
        return self.app.amqp.queues[name]

    def queue_arguments(self, name: str) -> dict[str, Any]:
        """Arguments of the queues PacificPy declares for ``name``: the user's own.

        The hook for priorities: a queue with ``x-max-priority`` is declared by the user in
        ``task_queues`` (Celery's ``queue_arguments``) and PacificPy keeps it; publishing a
        priority is the flow-control work's (the ``priority`` of :meth:`publish`).
        """
        return dict(self.queue(name).queue_arguments or {})

    # -- publishing ------------------------------------------------------------------------
    def publish(
        self,
        message: Message,
        delay: float | None,
        *,
        task_name: str,
        limits: tuple[float | None, float | None],
        priority: int | None = None,
    ) -> None:
        """Publish ``message`` and wait for RabbitMQ's confirm.

        Args:
            message: the PacificPy message.
            delay: seconds before a worker may see it (a delay queue), or None.
            task_name: the Celery task name.
            limits: Celery's ``(soft, hard)`` time limits.
            priority: the AMQP message priority (None: none), for queues declared with
                ``x-max-priority``.

        Raises:
            Exception: kombu's or py-amqp's error (the caller makes it an EnqueueError).
        """
        env = message.envelope
        queue = self.queue(env.queue)
        headers = celery_headers(message, None, task_name=task_name, limits=limits)
        options: dict[str, Any] = {
            "headers": headers,
            "content_type": "application/json",
            "content_encoding": "utf-8",
            "correlation_id": env.task_id,
            "reply_to": "",
            "delivery_mode": 2,
            "retry": True,
            "retry_policy": dict(_RETRY_ONCE),
            "timeout": self.timeout,
            "declare": [queue],
        }
        if priority is not None:
            options["priority"] = priority
        body = celery_body(message)
        with self.app.producer_pool.acquire(block=True) as producer:
            if delay is not None and delay > 0:
                # Like the publish, the declare gets one more try on a fresh connection.
                declare = producer.connection.ensure(
                    producer, self._delay_queue, **dict(_RETRY_ONCE)
                )
                name = declare(producer, queue, delay_ms(delay))
                options["exchange"] = ""
                options["routing_key"] = name
            else:
                options["exchange"] = queue.exchange.name if queue.exchange else ""
                options["routing_key"] = queue.routing_key or queue.name
            producer.publish(body, **options)

    def _delay_queue(self, producer: Any, queue: Queue, ms: int) -> str:
        """Declare (again, when due) the delay queue of ``queue`` for ``ms``; its name."""
        name = delay_queue_name(queue.name, ms)
        now = time.monotonic()
        last = self._declared.get(name)
        if last is not None and now - last < _REDECLARE_S:
            return name
        producer.maybe_declare(queue)  # where its messages are dead-lettered to
        exchange = queue.exchange.name if queue.exchange else ""
        producer.channel.queue_declare(
            queue=name,
            durable=True,
            auto_delete=False,
            arguments={
                "x-message-ttl": ms,
                "x-expires": ms + _EXPIRES_MARGIN_MS,
                "x-dead-letter-exchange": exchange,
                "x-dead-letter-routing-key": queue.routing_key or queue.name,
            },
        )
        with self._lock:
            self._declared[name] = now
        return name

    # -- queue length ----------------------------------------------------------------------
    def queue_length(self, name: str) -> int:
        """Messages ready in queue ``name``: a passive declare (0 if nobody declared it)."""
        from amqp.exceptions import NotFound

        with self.app.pool.acquire(block=True) as conn:
            # A pooled connection may be closed (a failed publish closes it): reopen it.
            conn.ensure_connection(max_retries=1)
            channel = conn.channel()
            try:
                return int(channel.queue_declare(queue=name, passive=True).message_count)
            except NotFound:
                return 0  # the broker closed the channel
            finally:
                if channel.is_open:
                    channel.close()
