"""The producer side of the Celery backend: what the broker is, how a PacificPy message is
framed for it, and the thread that pushes messages enqueued from event loops.

With a Redis broker a message is pushed straight onto the queue's Redis list (``LPUSH``
of the exact frame kombu's Redis transport writes, Celery protocol 2): one round trip, no
producer pool. :class:`Publisher` does the same for event loops, pipelining whatever waits,
so ``.delay()`` never blocks a loop.
"""

from __future__ import annotations

import base64
import bisect
import concurrent.futures as cf
import datetime as dt
import os
import queue as queue_module
import socket
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from pacificpy.background import _codec, config
from pacificpy.background.monitor.previews import call_reprs
from pacificpy.background.task import Message, TaskSpec, new_task_id
from pacificpy.errors import EnqueueError

if TYPE_CHECKING:
    import redis
    from celery import Celery

__all__ = [
    "PRIORITY_SEP",
    "PRIORITY_STEPS",
    "BrokerInfo",
    "Publisher",
    "celery_body",
    "celery_frame",
    "celery_headers",
    "frame_due",
    "priority_suffix",
    "time_limits",
]

_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
#: kombu's Redis transport keeps priority ``p`` of queue ``q`` in list ``q + SEP + p``.
PRIORITY_SEP = "\x06\x16"
_DEFAULT_PRIORITY_STEPS = (0, 3, 6, 9)
#: The steps PacificPy sets (unless the app sets its own): one list per priority.
PRIORITY_STEPS = tuple(range(10))


def priority_suffix(priority: int, steps: Sequence[int]) -> str:
    """The suffix of the Redis list kombu keeps PacificPy ``priority`` (0..9) in.

    kombu's Redis transport drains the list of step 0 first (it is the queue's own list),
    so PacificPy priority ``p`` is kombu priority ``9 - p``, kept on the highest step at or
    below it, as kombu's ``Channel.priority`` rounds it.
    """
    level = 9 - priority
    step = steps[bisect.bisect_right(steps, level) - 1]
    return f"{PRIORITY_SEP}{step}" if step else ""


_BATCH = 512
#: URL schemes of kombu's py-amqp transport (RabbitMQ).
AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp"})


class BrokerInfo:
    """What the producer needs to know about the broker, read once from the Celery conf."""

    def __init__(
        self,
        url: str,
        *,
        redis: bool,
        prefix: str,
        priority_steps: tuple[int, ...],
        connect_timeout: float,
        socket_timeout: float,
    ) -> None:
        self.url = url
        self.redis = redis
        #: RabbitMQ (py-amqp): published through :mod:`._celery_amqp`.
        self.amqp = url.partition("://")[0].lower() in AMQP_SCHEMES
        self.prefix = prefix
        self.priority_steps = priority_steps
        #: The list suffix of each PacificPy priority, 0..9 (:func:`priority_suffix`).
        self.priority_lists = tuple(priority_suffix(p, priority_steps) for p in range(10))
        self.connect_timeout = connect_timeout
        self.socket_timeout = socket_timeout

    @property
    def safe_url(self) -> str:
        """The URL without credentials, for messages."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"

    def client(self) -> redis.Redis:
        """A new sync Redis client for a Redis broker, with the transport's timeouts."""
        import redis

        return redis.Redis.from_url(
            self.url,
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=self.socket_timeout,
        )

    @classmethod
    def of(cls, app: Celery) -> BrokerInfo:
        """Read the write broker of ``app`` (the first of a failover list)."""
        conf = app.conf
        url = conf.broker_write_url or conf.broker_url or "amqp://guest@localhost//"
        if isinstance(url, (list, tuple)):
            url = url[0]
        url = str(url).split(";")[0].strip()
        options = dict(conf.broker_transport_options or {})
        scheme = url.partition("://")[0].lower()
        return cls(
            url,
            redis=scheme in ("redis", "rediss", "unix"),
            prefix=str(options.get("global_keyprefix", "")),
            priority_steps=tuple(options.get("priority_steps", _DEFAULT_PRIORITY_STEPS)),
            connect_timeout=float(
                options.get("socket_connect_timeout") or conf.broker_connection_timeout or 4.0
            ),
            socket_timeout=float(options.get("socket_timeout") or 10.0),
        )


def time_limits(spec: TaskSpec | None, grace: float) -> tuple[float | None, float | None]:
    """Celery's ``(soft, hard)`` time limits of a task: its timeout, and ``grace`` later.

    An async task is cancelled at its timeout by PacificPy's own limit on its event loop;
    a soft limit at the same instant would race it (two outcomes for one run, one retry
    published twice), so an async task's soft limit comes half the grace later, as a
    backstop for a loop that a blocking call keeps from cancelling the task.
    """
    timeout = spec.timeout if spec is not None else None
    if not timeout:
        return None, None
    soft = timeout + grace / 2 if spec is not None and spec.is_async else timeout
    return soft, timeout + grace


_origin: tuple[int, str] = (0, "")


@config.resets(__name__, "_origin")
def _forget_origin() -> None:
    global _origin
    _origin = (0, "")


def _origin_name() -> str:
    """Celery's ``origin`` header: this producer (per process, so a fork gets its own)."""
    global _origin
    pid = os.getpid()
    if _origin[0] != pid:
        _origin = (pid, f"gen{pid}@{socket.gethostname()}")
    return _origin[1]


def celery_headers(
    message: Message,
    delay: float | None,
    *,
    task_name: str,
    limits: tuple[float | None, float | None],
) -> dict[str, Any]:
    """The Celery protocol 2 headers of ``message`` (an ETA header when ``delay`` > 0)."""
    env = message.envelope
    eta = None
    if delay is not None and delay > 0:
        eta = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=delay)).isoformat()
    soft, hard = limits
    if env.serializer == "json":
        # Flower and Celery events show these: the monitor's redacted preview, never repr.
        argsrepr, kwargsrepr = call_reprs(env.task_name, env.args, env.kwargs)
    else:
        argsrepr, kwargsrepr = "<pickled>", "<pickled>"
    return {
        "lang": "py",
        "task": task_name,
        "id": env.task_id,
        "shadow": None,
        "eta": eta,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": env.attempt - 1,
        "timelimit": [hard, soft],
        "root_id": env.task_id,
        "parent_id": env.parent_id,
        "argsrepr": argsrepr,
        "kwargsrepr": kwargsrepr,
        "origin": _origin_name(),
        "ignore_result": True,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }


def celery_body(message: Message) -> bytes:
    """The Celery protocol 2 body: ``[args, kwargs, embed]``, the message text the one arg."""
    return orjson.dumps([[message.data.decode("utf-8", "replace")], {}, _EMBED])


def celery_frame(
    message: Message,
    delay: float | None,
    *,
    task_name: str,
    key_prefix: str,
    limits: tuple[float | None, float | None],
    priority_lists: Sequence[str] = ("",) * 10,
) -> tuple[str, bytes]:
    """The Redis list and the kombu frame (Celery protocol 2) that carry ``message``.

    Args:
        message: the PacificPy message; its text is the Celery task's one argument.
        delay: countdown in seconds (an ETA header), or None.
        task_name: the Celery task name.
        key_prefix: the transport's ``global_keyprefix``.
        limits: ``(soft, hard)`` time limits, from :func:`time_limits`.
        priority_lists: the list suffix of each priority (``BrokerInfo.priority_lists``).
    """
    env = message.envelope
    headers = celery_headers(message, delay, task_name=task_name, limits=limits)
    body = base64.b64encode(celery_body(message)).decode("ascii")
    queue = env.queue
    frame = {
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": env.task_id,
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 9 - env.priority,  # kombu's order on Redis: 0 first
            "body_encoding": "base64",
            "delivery_tag": new_task_id(),
        },
    }
    return key_prefix + queue + priority_lists[env.priority], orjson.dumps(frame)


def frame_due(frame: bytes) -> float | None:
    """When the message in a kombu Redis ``frame`` became due (Unix time): the enqueue
    time its PacificPy message carries, or its ETA header if later; None if the frame
    holds no PacificPy message."""
    try:
        d = orjson.loads(frame)
        body = d["body"]
        if d.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = orjson.loads(body)[0]
        peeked = _codec.peek_body(args[0])
        ts = peeked.get("ts") if peeked is not None else None
        if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not ts > 0:
            return None
        eta = (d.get("headers") or {}).get("eta")
        if isinstance(eta, str):
            ts = max(ts, dt.datetime.fromisoformat(eta).timestamp())
        return float(ts)
    except Exception:
        return None


_STOP = object()


class Publisher:
    """One thread that pushes messages enqueued from event loops, pipelining what waits.

    A caller gets a ``concurrent.futures.Future`` resolved when Redis took its message (or
    failed with ``EnqueueError``); the loop never blocks on the socket.

    Args:
        client: returns the broker's sync Redis client.
        error: builds the ``EnqueueError`` for a message Redis did not take.
    """

    def __init__(
        self,
        client: Callable[[], redis.Redis],
        error: Callable[[Message, BaseException], EnqueueError],
    ) -> None:
        self._client = client
        self._error = error
        self._pid = os.getpid()
        self._queue: queue_module.SimpleQueue[Any] = queue_module.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name="pacificpy-celery-publisher", daemon=True
        )
        self._thread.start()

    def usable(self) -> bool:
        """False in a forked child, or once the thread has stopped."""
        return self._pid == os.getpid() and self._thread.is_alive()

    def put(self, key: str, frame: bytes, message: Message) -> cf.Future[None]:
        """Queue ``frame`` for the Redis list ``key``."""
        fut: cf.Future[None] = cf.Future()
        self._queue.put((key, frame, message, fut))
        return fut

    def stop(self, timeout: float) -> None:
        """Push what is queued, then end the thread (waiting up to ``timeout``)."""
        if self._pid != os.getpid():
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            stop = item is _STOP
            batch = [] if stop else [item]
            while len(batch) < _BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue_module.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    continue
                batch.append(nxt)
            if batch:
                self._push(batch)
            if stop:
                return

    def _push(self, batch: list[tuple[str, bytes, Message, cf.Future[None]]]) -> None:
        try:
            pipe = self._client().pipeline(transaction=False)
            for key, frame, _, _ in batch:
                pipe.lpush(key, frame)
            pipe.execute()
        except Exception as exc:
            for _, _, message, fut in batch:
                if fut.set_running_or_notify_cancel():
                    fut.set_exception(self._error(message, exc))
            return
        for _, _, _, fut in batch:
            if fut.set_running_or_notify_cancel():
                fut.set_result(None)
