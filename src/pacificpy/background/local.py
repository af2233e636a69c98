"""The in-process backend: sync tasks on a thread pool, async tasks on an event loop.

When an app serves, async tasks run on its loop (started at startup); in a plain script
they run on a loop thread the executor owns. Countdowns and retry waits are kept by a
scheduler thread, so a task waiting to retry holds no worker. At shutdown the executor
stops taking tasks, waits up to ``shutdown_timeout`` for queued and running ones, and
logs and marks ``abandoned`` whatever is left.
"""

from __future__ import annotations

import asyncio
import atexit
import heapq
import itertools
import logging
import os
import queue as queue_module
import threading
import time
from collections.abc import Callable
from typing import Any

from pacificpy.background import _codec, execution, registry
from pacificpy.background._consumers import Consumers
from pacificpy.background._lane import TOKEN, PriorityLane
from pacificpy.background.backends.memory import InMemoryBackend
from pacificpy.background.execution import Decision
from pacificpy.background.task import (
    Message,
    Outcome,
    TaskEnvelope,
    TaskHandle,
    TaskSpec,
    _current,
    new_task_id,
)
from pacificpy.background.workers import Heartbeat
from pacificpy.errors import EnqueueError, QueueFull
from pacificpy.types import TaskStatus

__all__ = ["LocalExecutor", "get_local_executor"]

logger = logging.getLogger("pacificpy.background")

_STOP = object()
MAX_RESULTS = 10_000


class _Scheduler:
    """A thread that calls callbacks at given monotonic times."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def at(self, when: float, callback: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._seq), callback))
            if self._thread is None:
                self._stopped = False
                self._thread = threading.Thread(
                    target=self._run, name="pacificpy-scheduler", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(wait)
                if self._stopped:
                    return
                _, _, callback = heapq.heappop(self._heap)
            try:
                callback()
            except Exception:
                logger.exception("scheduled callback failed")

    def stop(self) -> list[Callable[[], None]]:
        """Stop the thread and return the callbacks that never ran."""
        with self._cond:
            self._stopped = True
            left = [cb for _, _, cb in self._heap]
            self._heap.clear()
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        return left


class _Pending:
    """A delayed message, known to the executor so shutdown can account for it."""

    __slots__ = ("cancelled", "message")

    def __init__(self, message: Message) -> None:
        self.message = message
        self.cancelled = False


class LocalExecutor(InMemoryBackend):
    """In-process backend. Use :func:`get_local_executor` to make one."""

    kind = "local"

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        max_queue_size: int = 10_000,
        shutdown_timeout: float = 30.0,
        allow_pickle: bool = False,
    ) -> None:
        super().__init__(allow_pickle=allow_pickle, shutdown_timeout=shutdown_timeout)
        if max_workers is None:
            max_workers = min(32, (os.cpu_count() or 1) + 4)
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        if max_queue_size < 1:
            raise ValueError("max_queue_size must be at least 1")
        self.max_workers = max_workers
        self.max_queue_size = max_queue_size
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._work: queue_module.SimpleQueue[Any] = queue_module.SimpleQueue()
        self._lane = PriorityLane()  # sync messages with a priority (TOKENs in _work)
        self._async_lane = PriorityLane()  # async ones (their tasks carry a TOKEN)
        self._threads: list[threading.Thread] = []
        self._stuck = 0  # threads still running a task that passed its timeout
        self._waiting: dict[str, int] = {}
        self._waiting_total = 0
        self._queued: dict[str, Message] = {}
        self._running: dict[str, Message] = {}
        self._delayed: dict[str, _Pending] = {}
        self._scheduler = _Scheduler()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._own_loop: asyncio.AbstractEventLoop | None = None
        self._own_loop_thread: threading.Thread | None = None
        self._consumers: dict[asyncio.AbstractEventLoop, Consumers] = {}
        self._async_tasks: set[asyncio.Task[Any]] = set()  # the consumers' tasks
        self._idle_waiters = 0  # threads in _wait_idle (notified when the executor idles)
        self._accepting = True
        self._draining = False
        self._started = False
        self._atexit_registered = False
        self._heartbeat: Heartbeat | None = None

    def __repr__(self) -> str:
        return f"<LocalExecutor max_workers={self.max_workers} started={self._started}>"

    # -- lifecycle -----------------------------------------------------------------------
    def _ensure_started(self) -> None:
        if self._started:
            return
        with self._lock:
            if self._started:
                return
            for i in range(self.max_workers):
                self._spawn_thread(i)
            self._started = True
            queues = self._registry_queues()
            heartbeat = None
            if queues is not None:
                heartbeat = self._heartbeat = Heartbeat(
                    self.state, backend=self.kind, queues=queues, running=self._running_tasks,
                    interval=self.heartbeat_interval,
                )  # fmt: skip
            if not self._atexit_registered:
                atexit.register(self._drain_at_exit)
                self._atexit_registered = True
        if heartbeat is not None:
            heartbeat.start()

    def _registry_queues(self) -> list[str] | None:
        """The queues this executor's heartbeat names (None: it registers no worker)."""
        return ["*"]

    def _running_tasks(self) -> list[dict[str, str]]:
        """What the executor runs now, for its heartbeat in the worker registry."""
        with self._lock:
            running = list(self._running.values())
        return [{"id": m.task_id, "name": m.task_name, "queue": m.queue} for m in running]

    def _spawn_thread(self, i: int) -> None:
        t = threading.Thread(target=self._worker, name=f"pacificpy-worker-{i}", daemon=True)
        t.start()
        self._threads.append(t)

    async def startup(self) -> None:
        """Run async tasks on the calling (serving) loop from now on, and start the pool."""
        self._loop = asyncio.get_running_loop()
        self._accepting = True
        self._ensure_started()

    async def shutdown(self) -> None:
        """Stop taking tasks; wait up to ``shutdown_timeout`` for the rest; abandon leftovers."""
        self._accepting = False
        self._draining = True
        await asyncio.to_thread(self._wait_idle, self.shutdown_timeout)
        self._finish_shutdown()
        self._loop = None

    def shutdown_sync(self, timeout: float | None = None) -> None:
        """Blocking shutdown, for scripts and tests with no running loop."""
        self._accepting = False
        self._draining = True
        self._wait_idle(self.shutdown_timeout if timeout is None else timeout)
        self._finish_shutdown()

    def join(self, timeout: float | None = None) -> bool:
        """Block until no task is waiting or running (countdowns and retry waits included).

        Handy in tests and scripts; the executor keeps taking tasks meanwhile.

        Returns:
            True once idle; False if ``timeout`` seconds passed first.
        """
        return self._wait_idle(float("inf") if timeout is None else timeout)

    def _drain_at_exit(self) -> None:
        if self._started:
            self.shutdown_sync()

    def _wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._idle:
            self._idle_waiters += 1
            try:
                while self._waiting_total or self._running:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._idle.wait(min(left, 0.5))
            finally:
                self._idle_waiters -= 1
        return True

    def _finish_shutdown(self) -> None:
        self._draining = False
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.stop()
        self._scheduler.stop()
        with self._lock:
            leftovers = [(m.task_id, m.task_name) for m in self._queued.values()]
            leftovers += [(p.message.task_id, p.message.task_name) for p in self._delayed.values()]
            leftovers += [(m.task_id, m.task_name) for m in self._running.values()]
            for p in self._delayed.values():
                p.cancelled = True
            self._delayed.clear()
            self._queued.clear()
            self._waiting.clear()
            self._waiting_total = 0
            self._running.clear()
            threads, self._threads = self._threads, []
            self._stuck = 0
            self._started = False
        self._leftovers(leftovers)
        for _ in threads:
            self._work.put(_STOP)
        for consumers in list(self._consumers.values()):
            consumers.closed = True
        for task in list(self._async_tasks):
            task.get_loop().call_soon_threadsafe(task.cancel)
        self._async_tasks.clear()
        own, self._own_loop = self._own_loop, None
        if own is not None:
            own.call_soon_threadsafe(own.stop)
        self._own_loop_thread = None
        self._consumers.clear()
        self._stop_portal()

    def _leftovers(self, leftovers: list[tuple[str, str]]) -> None:
        """What becomes of ``(task_id, name)`` still queued or running at shutdown: here,
        nothing outlives the process, so each is logged and stored as abandoned."""
        for task_id, name in leftovers:
            execution.abandon(task_id, name)
            self.state.store_outcome(
                task_id,
                Outcome(
                    TaskStatus.ABANDONED,
                    error="abandoned at shutdown",
                    error_type="Abandoned",
                    finished_at=time.time(),
                ),
            )

    # -- producing -----------------------------------------------------------------------
    def submit(self, message: Message, delay: float | None) -> TaskHandle[Any]:
        """Queue ``message`` now (this backend never needs the caller to await)."""
        self._put(message, delay, enforce_limit=True)
        return TaskHandle(message.task_id, message.task_name, self)

    def enqueue_sync(self, message: Message, *, delay: float | None = None) -> None:
        self._put(message, delay, enforce_limit=True)

    def _put(self, message: Message, delay: float | None, *, enforce_limit: bool) -> None:
        # While draining, a running task may still enqueue its follow-up (a chain started
        # before shutdown finishes within the timeout); nobody else may.
        if (
            enforce_limit
            and not self._accepting
            and not (self._draining and _current.get() is not None)
        ):
            raise EnqueueError(
                f"the local executor is shutting down; {message.task_name} was not queued",
                task_id=message.task_id,
                task_name=message.task_name,
            )
        self._ensure_started()
        env = message.envelope
        q = env.queue
        task_id = env.task_id  # (read once: Message.task_id is a property)
        with self._lock:
            if enforce_limit and self._waiting_total >= self.max_queue_size:
                raise QueueFull(
                    f"the local executor already holds {self._waiting_total} waiting tasks "
                    f"(max_queue_size={self.max_queue_size}); {message.task_name} was not "
                    "queued. Raise max_queue_size or add workers",
                    task_id=message.task_id,
                    task_name=message.task_name,
                )
            if enforce_limit and not self._claim(env):
                return  # (a retry or a deferred start republished claims nothing)
            if (
                enforce_limit
                and env.attempt == 1
                and (
                    task_id in self._queued or task_id in self._running or task_id in self._delayed
                )
            ):
                raise EnqueueError(
                    f"a task with id {message.task_id} is already queued or running; "
                    "task ids must be unique",
                    task_id=message.task_id,
                    task_name=message.task_name,
                )
            self._waiting[q] = self._waiting.get(q, 0) + 1
            self._waiting_total += 1
            if delay is not None and delay > 0:
                pending = _Pending(message)
                self._delayed[task_id] = pending
            else:
                pending = None
                self._queued[task_id] = message
        if pending is not None:
            self._scheduler.at(time.monotonic() + delay, lambda: self._release(pending))  # type: ignore[operator]
        else:
            self._dispatch(message)

    def _release(self, pending: _Pending) -> None:
        with self._lock:
            if pending.cancelled:
                return
            self._delayed.pop(pending.message.task_id, None)
            self._queued[pending.message.task_id] = pending.message
        self._dispatch(pending.message)

    def _dispatch(self, message: Message) -> None:
        try:
            is_async = registry.get(message.task_name).is_async
        except Exception:
            is_async = False  # unknown here: a worker thread turns it into a dead letter
        if not is_async:
            if message.envelope.priority:
                self._lane.put(message)
                self._work.put(TOKEN)
            else:
                self._work.put(message)
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._ensure_own_loop()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._spawn_async(message)
        else:
            loop.call_soon_threadsafe(self._spawn_async, message)

    def _ensure_own_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._own_loop is None:
                loop = asyncio.new_event_loop()
                t = threading.Thread(target=loop.run_forever, name="pacificpy-async", daemon=True)
                t.start()
                self._own_loop, self._own_loop_thread = loop, t
            return self._own_loop

    # -- running -------------------------------------------------------------------------
    def _take(self, message: Message) -> bool:
        """Move a message from waiting to running; False if shutdown already claimed it."""
        env = message.envelope
        with self._lock:
            if self._queued.pop(env.task_id, None) is None:
                return False
            q = env.queue
            self._waiting[q] = self._waiting.get(q, 1) - 1
            self._waiting_total -= 1
            self._running[env.task_id] = message
            return True

    def _done(self, message: Message) -> None:
        task_id = message.envelope.task_id
        with self._lock:
            # A retry with no delay may already run under the same id: pop only this run.
            if self._running.get(task_id) is message:
                del self._running[task_id]
            if self._idle_waiters and not self._waiting_total and not self._running:
                self._idle.notify_all()

    def _worker(self) -> None:
        while True:
            item = self._work.get()
            if item is _STOP:
                return
            if item is TOKEN or self._lane.heap:
                item = self._lane.pick(item)
            message: Message = item
            if not self._take(message):
                continue
            try:
                retire = self._run_sync(message)
            except Exception:
                logger.exception("local worker failed around task %s", message.task_id)
                retire = False
            finally:
                self._done(message)
            if retire:
                return

    def _run_sync(self, message: Message) -> bool:
        """Run one sync message; True when this thread overran a timeout and must retire."""
        prep = self._prepared(message) or execution.prepare(message.data, self)
        if isinstance(prep, Decision):
            self._settle(prep, message)
            return False
        env, spec = prep
        if spec.flow is not None:
            retire = execution.run_admitted(
                env, spec, self, lambda: self._run_prepared(message, env, spec)
            )
            if isinstance(retire, Decision):  # held back by a limit
                self._settle(retire, message)
                return False
            return retire
        return self._run_prepared(message, env, spec)

    def _run_prepared(self, message: Message, env: TaskEnvelope, spec: TaskSpec) -> bool:
        if not spec.timeout:
            started = time.perf_counter()
            value, exc = execution.call_sync(env, spec, self.state)
            self._settle(
                execution.conclude(env, spec, started, value=value, exc=exc, data=message.data),
                message,
            )
            return False
        return self._run_sync_with_timeout(message, env, spec)

    def _run_sync_with_timeout(self, message: Message, env: TaskEnvelope, spec: TaskSpec) -> bool:
        claim = threading.Lock()
        started = time.perf_counter()

        def on_timeout() -> None:
            if not claim.acquire(blocking=False):
                return
            self._done(message)
            self._stuck_thread(env, spec)
            self._settle(
                execution.conclude(
                    env, spec, started, exc=execution.timeout_error(spec), data=message.data
                ),
                message,
            )

        assert spec.timeout is not None
        self._scheduler.at(time.monotonic() + spec.timeout, on_timeout)
        value, exc = execution.call_sync(env, spec, self.state)
        if not claim.acquire(blocking=False):
            logger.warning(
                "timed-out task %s %s finally returned; its result is discarded",
                env.task_name, env.task_id,
            )  # fmt: skip
            return self._unstuck_thread()
        self._settle(
            execution.conclude(env, spec, started, value=value, exc=exc, data=message.data),
            message,
        )
        return False

    def _stuck_thread(self, env: TaskEnvelope, spec: TaskSpec) -> None:
        """A worker thread overran a timeout: replace it, up to ``max_workers`` extra threads.

        Past that cap no thread is started: new sync tasks wait for a free thread.
        """
        with self._lock:
            self._stuck += 1
            stuck = self._stuck
            live = len(self._threads) - stuck
            replace = live < self.max_workers and len(self._threads) < 2 * self.max_workers
            if replace:
                self._spawn_thread(len(self._threads))
        if replace:
            logger.warning(
                "task %s %s passed its timeout of %ss; its worker thread cannot be stopped "
                "and stays busy until the function returns (a replacement thread is started)",
                env.task_name, env.task_id, spec.timeout,
            )  # fmt: skip
        else:
            logger.warning(
                "task %s %s passed its timeout of %ss; %d worker threads are stuck in "
                "timed-out tasks and no more replacements are started (at most max_workers="
                "%d extra threads): new sync tasks wait until a stuck task returns",
                env.task_name, env.task_id, spec.timeout, stuck, self.max_workers,
            )  # fmt: skip

    def _unstuck_thread(self) -> bool:
        """A stuck thread's task returned: True if the thread retires (it was replaced)."""
        me = threading.current_thread()
        with self._lock:
            if me not in self._threads:
                return False  # an earlier pool's thread: its stop marker is queued
            self._stuck = max(0, self._stuck - 1)
            if len(self._threads) - self._stuck > self.max_workers:
                self._threads.remove(me)
                return True
            return False

    def _spawn_async(self, message: Message) -> None:
        """Hand ``message`` to this loop's consumers (on the loop's thread)."""
        loop = asyncio.get_running_loop()
        consumers = self._consumers.get(loop)
        if consumers is None:
            consumers = Consumers(
                self.max_workers,
                self._run_async,
                self._async_tasks,
                backlog=max(1, self.max_queue_size // 2),
            )
            self._consumers[loop] = consumers
        if message.envelope.priority:
            self._async_lane.put(message)
            consumers.put(TOKEN)
        else:
            consumers.put(message)

    async def _run_async(self, message: Message) -> None:
        if message is TOKEN or self._async_lane.heap:
            message = self._async_lane.pick(message)
        if not self._take(message):
            return
        done = False
        try:
            decision = await execution.execute(message.data, self, prepared=self._prepared(message))
            done = self._settle(decision, message)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("local executor failed around task %s", message.task_id)
        finally:
            if not done:  # (a final decision's _settle already ended the run)
                self._done(message)

    # -- outcomes ------------------------------------------------------------------------
    def _settle(self, decision: Decision, message: Message) -> bool:
        """Carry out ``decision``; True if the run was ended here (a final decision)."""
        final = decision.kind not in execution.REPUBLISH
        if final:
            # The run ends before its outcome and dead letter are seen: whoever reacts to
            # them (a requeue of the letter, say) must find the id free.
            self._done(message)
        execution.settle(decision, message.data, self.state, self._publish_retry,
                         signing_key=self.signing_key)  # fmt: skip
        return final

    def cancel_sync(self, task_id: str, *, terminate: bool = False, name: str = "") -> bool:
        """:meth:`BackgroundBackend.cancel_sync`; a task waiting out a countdown or a retry
        delay here is also dropped at once, so it holds neither ``join()`` nor shutdown."""
        stopped = super().cancel_sync(task_id, terminate=terminate, name=name)
        if stopped:
            self._drop_delayed(task_id)
        return stopped

    def _drop_delayed(self, task_id: str) -> None:
        with self._lock:
            pending = self._delayed.pop(task_id, None)
            if pending is None:
                return
            pending.cancelled = True
            q = pending.message.queue
            self._waiting[q] = self._waiting.get(q, 1) - 1
            self._waiting_total -= 1
            if self._idle_waiters and not self._waiting_total and not self._running:
                self._idle.notify_all()
        env = pending.message.envelope
        if env.idempotency_key:  # as the refused delivery would have (a new call may run)
            self.state.release(env.task_name, env.idempotency_key)

    def _publish_retry(self, message: Message, delay: float) -> None:
        self._put(message, delay, enforce_limit=False)

    def get_status_sync(self, task_id: str) -> TaskStatus | None:
        outcome = self.state.get_outcome(task_id)
        if outcome is None and task_id in self._running:
            return TaskStatus.RUNNING
        return super().get_status_sync(task_id)

    def queued_hint(self, task_id: str) -> str:
        """No worker to start here: the executor runs every queue in this process."""
        return (
            "the local executor runs every queue in this process, so it waits out a "
            f"countdown or eta, or for a free worker (all {self.max_workers} busy?)"
        )

    # -- queues and dead letters ---------------------------------------------------------
    def queue_length_sync(self, queue: str = "default") -> int:
        """Tasks waiting in ``queue``: ready for a worker, or waiting out a countdown/retry."""
        return self._waiting.get(queue, 0)

    def oldest_waiting_sync(self, queue: str = "default") -> float | None:
        """Enqueue time of the oldest task of ``queue`` ready for a free worker (the head of
        the executor's queue; countdowns not due yet do not count)."""
        with self._lock:
            for message in self._queued.values():
                if message.queue == queue:
                    return message.envelope.enqueued_at or None
        return None

    def submit_raw(self, data: bytes, *, queue: str = "default") -> None:
        """Deliver raw bytes as if a transport had: what a worker receives, unchecked.

        For tests of bad messages (garbage, forged, pickled): they become dead letters.
        """
        task_id, name = _codec.peek(data)
        env = TaskEnvelope(task_id=task_id or new_task_id(), task_name=name or "?",
                           queue=queue)  # fmt: skip
        self._put(Message(env, data), None, enforce_limit=True)


def get_local_executor(
    max_workers: int | None = None,
    *,
    max_queue_size: int = 10_000,
    shutdown_timeout: float = 30.0,
    allow_pickle: bool = False,
) -> LocalExecutor:
    """A new in-process executor: ``max_workers`` threads for sync tasks, and at most
    ``max_workers`` async tasks at once; ``QueueFull`` past ``max_queue_size`` waiting."""
    return LocalExecutor(
        max_workers,
        max_queue_size=max_queue_size,
        shutdown_timeout=shutdown_timeout,
        allow_pickle=allow_pickle,
    )
