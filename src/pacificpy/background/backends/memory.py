"""The in-process transports: what the local executor shares with the testing backends,
and the eager and capturing backends themselves.

They keep their state in this process (a :class:`MemoryTaskState`); the dead letters,
results and idempotency of the base backend work over it. :mod:`pacificpy.testing`
re-exports the eager and capturing backends with the helpers that install them
(``eager_tasks()``, ``capture_tasks()``); the local executor is
:mod:`pacificpy.background.local`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

from pacificpy.background import execution, registry
from pacificpy.background._outcomes import OutcomeBoard
from pacificpy.background.backend import BackgroundBackend
from pacificpy.background.backends.state import MemoryTaskState
from pacificpy.background.dead_letter import DeadLetter, MemoryDeadLetterStore
from pacificpy.background.execution import Decision
from pacificpy.background.monitor import TaskMonitor
from pacificpy.background.task import Message, Outcome, TaskEnvelope, TaskHandle, TaskSpec

__all__ = ["CapturedTask", "CapturingBackend", "EagerBackend", "InMemoryBackend"]

_SCALARS = frozenset({str, int, float, bool, type(None)})

#: The clock of idempotency-key expiry (tests replace it).
_clock = time.monotonic


class InMemoryBackend(BackgroundBackend):
    """A backend whose outcomes, dead letters and idempotency keys live in this process."""

    primary = "sync"
    blocking = False

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._state = MemoryTaskState(clock=lambda: _clock())

    @property
    def state(self) -> MemoryTaskState:
        """Outcomes, dead letters, idempotency keys and delivery counts, in memory."""
        return self._state

    # The state's parts under the names the tests of the first release know.
    @property
    def _outcomes(self) -> OutcomeBoard:
        return self.state.outcomes

    @property
    def _dead(self) -> MemoryDeadLetterStore:
        return self.state.letters

    @property
    def _keys(self) -> dict[tuple[str, str], float]:
        """The idempotency keys held: (task name, key) -> expiry."""
        return self.state.keys

    @property
    def _key_expiry(self) -> list[tuple[float, tuple[str, str]]]:
        return self.state.key_expiry

    # -- producing -----------------------------------------------------------------------
    def _claim(self, env: TaskEnvelope) -> bool:
        """False when an earlier task holds ``env``'s idempotency key (enqueue nothing).

        A first attempt also forgets any outcome left under its id (a requeued task, or a
        key released after a failure, starts afresh).
        """
        if not self.claim_key(env):
            return False
        if env.attempt == 1:
            self.state.clear_outcome(env.task_id)
        return True

    def _resubmit(self, message: Message, letter: DeadLetter) -> None:
        """Run or queue a requeued letter's message here (the monitor is this process's)."""
        self.state.clear_outcome(message.task_id)
        self.submit(message, None)

    @staticmethod
    def _prepared(message: Message) -> tuple[TaskEnvelope, TaskSpec] | None:
        """Skip decoding a message this process built, when decoding would change nothing.

        Decoding gives a task JSON-typed copies of its arguments, as on Celery and ARQ.
        For plain scalars (str, int, float, bool, None) the copy equals the original, so
        an in-process message with only those runs from its envelope as it is.
        """
        env = message.envelope
        if not message.trusted or env.serializer != "json":
            return None
        if not all(type(a) in _SCALARS for a in env.args):
            return None
        if env.kwargs and not all(type(v) in _SCALARS for v in env.kwargs.values()):
            return None
        try:
            spec = registry.get(env.task_name)
        except Exception:
            return None
        return env, spec


class _InlineBackend(InMemoryBackend):
    """What the eager and capturing backends share: run messages inline, keep outcomes.

    ``monitor`` is the fresh in-memory monitor that ``get_task_monitor()`` returns inside
    the helper's block (it stays readable after the block).
    """

    kind = "inline"
    flow_control = False  # inline runs: concurrency and rate limits do not apply

    def __init__(self, *, allow_pickle: bool = False, max_attempts_inline: int = 100) -> None:
        super().__init__(allow_pickle=allow_pickle)
        self.monitor = TaskMonitor()
        self._lock = threading.Lock()
        self._max_attempts_inline = max_attempts_inline

    def adopt(self, other: BackgroundBackend | None) -> None:
        """Take the message settings of the backend this one stands in for."""
        if other is None:
            return
        self.signing_key = other.signing_key
        self.max_payload_bytes = other.max_payload_bytes
        self.idempotency_ttl = other.idempotency_ttl

    # -- running -------------------------------------------------------------------------
    def _run_sync(self, message: Message) -> Outcome | None:
        """Run ``message`` (and its retries, at once) in this thread; return its outcome."""
        for _ in range(self._max_attempts_inline):
            decision = execution.execute_sync(message.data, self)
            nxt = self._settle(decision, message)
            if nxt is None:
                return decision.outcome
            message = nxt
        return None

    async def _run_async(self, message: Message) -> Outcome | None:
        """Run ``message`` (and its retries, at once) on the running loop."""
        current: Message | None = message
        outcome = None
        for _ in range(self._max_attempts_inline):
            assert current is not None
            decision = await execution.execute(current.data, self)
            current, outcome = self._settle(decision, current), decision.outcome
            if current is None:
                return outcome
        return None

    def _settle(self, decision: Decision, message: Message) -> Message | None:
        """Carry out ``decision``; return the retry's message if one is due."""
        nxt: Message | None = execution.settle(
            decision, message.data, self.state, _next, signing_key=self.signing_key
        )
        return nxt

    def queue_length_sync(self, queue: str = "default") -> int:
        return 0


class EagerBackend(_InlineBackend):
    """Runs every task at ``.delay()``, in the caller, through the real execution path.

    - A sync task (or an async one called where no event loop runs) has finished when
      ``.delay()`` returns.
    - An async task called inside a running loop starts on that loop at once; ``await
      handle`` (and ``await handle.result()``) wait for it to finish.
    - Retries run at once, without their backoff; ``countdown``/``eta`` are ignored.
    - A final failure is recorded (``result()`` raises ``TaskFailed``, the dead letter is
      kept) and not raised at ``.delay()``, unless ``propagate=True``.
    """

    kind = "eager"

    def __init__(self, *, allow_pickle: bool = False, propagate: bool = False) -> None:
        super().__init__(allow_pickle=allow_pickle)
        self.propagate = propagate

    def submit(self, message: Message, delay: float | None) -> TaskHandle[Any]:
        """Run ``message`` now; see the class docstring for async tasks."""
        if not self._claim(message.envelope):
            return TaskHandle(message.task_id, message.task_name, self)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None and _is_async(message):
            task = loop.create_task(self._run_async(message))
            return TaskHandle(message.task_id, message.task_name, self, pending=task)
        outcome = self._run_sync(message)
        if self.propagate and outcome is not None:
            outcome.unwrap(message.task_id, message.task_name)
        return TaskHandle(message.task_id, message.task_name, self)

    def enqueue_sync(self, message: Message, *, delay: float | None = None) -> None:
        self.submit(message, delay)


def _next(message: Message, delay: float) -> Message:
    """An inline backend's "publish" of a retry: run it next, at once."""
    return message


def _is_async(message: Message) -> bool:
    try:
        return registry.get(message.task_name).is_async
    except Exception:
        return False


@dataclasses.dataclass(frozen=True)
class CapturedTask:
    """One ``.delay()`` / ``.apply_async()`` call seen by :class:`CapturingBackend`.

    Attributes:
        name: the task's registered name.
        args: positional arguments, as the task will receive them.
        kwargs: keyword arguments.
        options: ``queue``, ``countdown`` (seconds, from ``countdown`` or ``eta``),
            ``idempotency_key``, ``task_id``.
        message: the encoded message a real backend would have carried.
    """

    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: dict[str, Any]
    message: Message

    @property
    def envelope(self) -> Any:
        """The task's :class:`~pacificpy.background.task.TaskEnvelope`."""
        return self.message.envelope

    @property
    def id(self) -> str:
        """The task id the caller's handle carries."""
        return self.message.task_id


class CapturingBackend(_InlineBackend):
    """Records every enqueued task in :attr:`enqueued` and runs nothing until asked.

    Arguments are checked and encoded at the call site exactly as with a real backend, so a
    bad call still raises there. :meth:`run_all` then runs what was captured, in order
    (including tasks those tasks enqueue), and handles get their results.
    """

    kind = "capture"

    def __init__(self, *, allow_pickle: bool = False) -> None:
        super().__init__(allow_pickle=allow_pickle)
        self.enqueued: list[CapturedTask] = []
        self._pending: list[CapturedTask] = []

    def submit(self, message: Message, delay: float | None) -> TaskHandle[Any]:
        """Record ``message`` and return its handle."""
        if self._claim(message.envelope):
            env = message.envelope
            captured = CapturedTask(
                name=env.task_name,
                args=env.args,
                kwargs=dict(env.kwargs),
                options={
                    "queue": env.queue,
                    "countdown": delay,
                    "idempotency_key": env.idempotency_key,
                    "task_id": env.task_id,
                },
                message=message,
            )
            with self._lock:
                self.enqueued.append(captured)
                self._pending.append(captured)
        return TaskHandle(message.task_id, message.task_name, self)

    def enqueue_sync(self, message: Message, *, delay: float | None = None) -> None:
        self.submit(message, delay)

    def queued_hint(self, task_id: str) -> str:
        """Captured tasks run only when the test says so."""
        return "a capturing backend runs its tasks only in run_all() / arun_all()"

    # -- assertions ----------------------------------------------------------------------

    def tasks(self, task: Any = None) -> list[CapturedTask]:
        """The captured calls, of ``task`` only when given (a task or its name)."""
        if task is None:
            return list(self.enqueued)
        name = _task_name(task)
        return [c for c in self.enqueued if c.name == name]

    def assert_enqueued(self, task: Any, *args: Any, **kwargs: Any) -> CapturedTask:
        """Assert ``task`` was enqueued; with arguments given, with exactly those.

        Arguments are compared as the task receives them (after the JSON round trip a
        tuple arrives as a list). Returns the first matching call.

        Raises:
            AssertionError: no such call, listing the calls that were captured.
        """
        name = _task_name(task)
        calls = self.tasks(name)
        for call in calls:
            if not args and not kwargs:
                return call
            if _same(call.args, args) and call.kwargs == kwargs:
                return call
        seen = "\n".join(f"  {c.name}{_fmt(c.args, c.kwargs)}" for c in self.enqueued) or "  none"
        wanted = _fmt(args, kwargs) if (args or kwargs) else "(any arguments)"
        raise AssertionError(f"{name}{wanted} was not enqueued; enqueued:\n{seen}")

    def assert_not_enqueued(self, task: Any) -> None:
        """Assert ``task`` was never enqueued."""
        calls = self.tasks(task)
        if calls:
            raise AssertionError(
                f"{_task_name(task)} was enqueued {len(calls)} time(s): "
                + ", ".join(_fmt(c.args, c.kwargs) for c in calls)
            )

    def clear(self) -> None:
        """Forget every captured call (pending ones are dropped, not run)."""
        with self._lock:
            self.enqueued.clear()
            self._pending.clear()

    # -- running -------------------------------------------------------------------------
    def run_all(self, *, max_tasks: int = 10_000) -> list[Outcome]:
        """Run the captured tasks not run yet, in order, until none is left.

        Tasks enqueued while they run are captured and run too. Retries run at once.
        Needs a thread with no running event loop (an async test uses :meth:`arun_all`).

        Returns:
            The final outcome of every task run.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("run_all() called inside a running event loop; use arun_all()")
        return self._drain(max_tasks, lambda m: self._run_sync(m))

    async def arun_all(self, *, max_tasks: int = 10_000) -> list[Outcome]:
        """:meth:`run_all` for async code: async tasks run on the calling loop."""
        outcomes: list[Outcome] = []
        for _ in range(max_tasks):
            item = self._next()
            if item is None:
                return outcomes
            if _is_async(item.message):
                outcome = await self._run_async(item.message)
            else:
                outcome = await asyncio.to_thread(self._run_sync, item.message)
            if outcome is not None:
                outcomes.append(outcome)
        raise RuntimeError(f"more than {max_tasks} tasks ran: a task keeps enqueuing itself?")

    def _next(self) -> CapturedTask | None:
        with self._lock:
            return self._pending.pop(0) if self._pending else None

    def _drain(self, max_tasks: int, run: Callable[[Message], Outcome | None]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for _ in range(max_tasks):
            item = self._next()
            if item is None:
                return outcomes
            outcome = run(item.message)
            if outcome is not None:
                outcomes.append(outcome)
        raise RuntimeError(f"more than {max_tasks} tasks ran: a task keeps enqueuing itself?")

    @property
    def pending(self) -> int:
        """How many captured tasks have not run yet."""
        return len(self._pending)

    def queue_length_sync(self, queue: str = "default") -> int:
        """Captured tasks of ``queue`` not run yet."""
        with self._lock:
            return sum(1 for c in self._pending if c.options["queue"] == queue)


def _task_name(task: Any) -> str:
    if isinstance(task, str):
        return task
    name = getattr(task, "name", None)
    if isinstance(name, str):
        return name
    raise TypeError(f"expected a @background task or a task name, not {task!r}")


def _same(got: tuple[Any, ...], wanted: tuple[Any, ...]) -> bool:
    if len(got) != len(wanted):
        return False
    return all(_loose_eq(g, w) for g, w in zip(got, wanted, strict=True))


def _loose_eq(got: Any, wanted: Any) -> bool:
    if isinstance(wanted, tuple) and isinstance(got, list):
        return _same(tuple(got), wanted)
    return bool(got == wanted)


def _fmt(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return "(" + ", ".join(parts) + ")"
