"""The one place that runs a task: decode, verify, look up, bind, run, then decide.

Every backend's worker side hands the message bytes to :func:`execute` (event-loop
workers) or :func:`execute_sync` (thread workers) and gets back a :class:`Decision`:
completed, retry after a delay, failed for good, or dead (could not run at all). Monitor
events, retry policy, logging and dead-letter records all happen here; the backend only
carries the decision out with its transport (store the outcome, re-enqueue, keep the
dead letter).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import logging
import time
import traceback as tb_module
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pacificpy.background import _codec, cancellation, flow, registry
from pacificpy.background.backends.state import Ending
from pacificpy.background.config import get_task_monitor, run_wrappers
from pacificpy.background.dead_letter import DeadLetter
from pacificpy.background.task import (
    Message,
    Outcome,
    TaskContext,
    TaskEnvelope,
    TaskSpec,
    _current,
    new_task_id,
)
from pacificpy.errors import (
    MessageRejected,
    TaskArgumentError,
    TaskCancelled,
    TaskNotFound,
    TaskTimeout,
)
from pacificpy.types import TaskStatus

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from pacificpy.background.backend import BackgroundBackend
    from pacificpy.background.backends.state import TaskState

__all__ = [
    "Decision",
    "abandon",
    "call_sync",
    "conclude",
    "execute",
    "execute_sync",
    "prepare",
    "reject",
    "run_wrappers",
    "settle",
    "settle_async",
]

logger = logging.getLogger("pacificpy.background")
R = TypeVar("R")

#: Decision kinds that publish ``next_envelope`` again after ``delay``.
REPUBLISH = frozenset({"retry", "defer"})


@dataclasses.dataclass
class Decision:
    """What should happen after one delivery of one message.

    ``kind`` is ``completed``, ``retry`` (re-enqueue ``next_envelope`` after ``delay``
    seconds), ``defer`` (a concurrency or rate limit held the start back: re-enqueue the
    same attempt after ``delay``, nothing spent), ``failed`` (final failure: store
    ``outcome``, keep ``dead_letter``), ``dead`` (could not be run: keep
    ``dead_letter``, store ``outcome`` if the id is known) or ``cancelled``
    (``handle.cancel()`` stopped it: store ``outcome``, never a letter).
    """

    kind: str
    envelope: TaskEnvelope | None
    outcome: Outcome | None = None
    delay: float = 0.0
    next_envelope: TaskEnvelope | None = None
    dead_letter: DeadLetter | None = None

    @property
    def task_id(self) -> str | None:
        if self.envelope is not None:
            return self.envelope.task_id
        return self.dead_letter.task_id if self.dead_letter else None


def _data_text(data: bytes | str) -> str:
    return data if isinstance(data, str) else data.decode("utf-8", "replace")


def reject(
    data: bytes | str,
    exc: BaseException,
    *,
    reason: str,
    envelope: TaskEnvelope | None = None,
    attempts: int = 0,
) -> Decision:
    """The decision for a message that cannot be run: a dead letter, logged and monitored."""
    task_id: str | None
    name: str | None
    if envelope is not None:
        task_id, name = envelope.task_id, envelope.task_name
    else:
        task_id, name = _codec.peek(data)
    error = f"{type(exc).__name__}: {exc}"
    logger.error("dead letter (%s) for task %s %s: %s", reason, name, task_id, error)
    letter = DeadLetter(
        id=new_task_id(),
        task_id=task_id,
        task_name=name,
        reason=reason,
        error=str(exc),
        error_type=type(exc).__name__,
        args=list(envelope.args) if envelope and envelope.serializer == "json" else [],
        kwargs=dict(envelope.kwargs) if envelope and envelope.serializer == "json" else {},
        attempts=attempts or (envelope.attempt if envelope else 0),
        queue=envelope.queue if envelope else "default",
        enqueued_at=envelope.enqueued_at if envelope else None,
        data=_data_text(data),
        requeueable=envelope is not None,
    )
    outcome = Outcome(
        status=TaskStatus.DEAD,
        error=str(exc),
        error_type=type(exc).__name__,
        attempts=letter.attempts,
        finished_at=time.time(),
    )
    if task_id is not None:
        _monitor_safely("task_dead", task_id, name, error)
    return Decision("dead", envelope, outcome=outcome, dead_letter=letter)


def prepare(
    data: bytes | str, backend: BackgroundBackend
) -> tuple[TaskEnvelope, TaskSpec] | Decision:
    """Decode, verify, look up and bind a message; a :class:`Decision` (dead) if it can't run."""
    try:
        env = _codec.decode(
            data, signing_key=backend.signing_key, allow_pickle=backend.allow_pickle
        )
    except MessageRejected as exc:
        return reject(data, exc, reason="rejected")
    try:
        spec = registry.get(env.task_name)
    except TaskNotFound as exc:
        return reject(data, exc, reason="unknown_task", envelope=env)
    try:
        spec.check_args(env.args, env.kwargs)
        if spec.plan.typed:
            spec.plan.from_wire(env.args, env.kwargs)  # converted again at the call
    except TaskArgumentError as exc:
        return reject(data, exc, reason="rejected", envelope=env)
    return env, spec


class _Refused(Exception):
    """The delivery arrived for a cancelled task (it has a tombstone): it never starts."""


class _running:
    """Context of one task run: registered for cancels, refused if cancelled already,
    ``current_task()`` set, ``task_running`` recorded.

    A class rather than a ``@contextmanager`` generator: it is entered once per task, and
    the generator machinery cost about as much as the rest of the bookkeeping.
    """

    __slots__ = ("_env", "_stack", "_state", "_token", "run")

    def __init__(self, env: TaskEnvelope, state: TaskState | None = None) -> None:
        self._env = env
        self._state = state
        self._stack: contextlib.ExitStack | None = None
        self.run: cancellation.Run | None = None

    @property
    def cancelled(self) -> bool:
        """True if a cancel reached this run (before or while it ran)."""
        run = self.run
        return run is not None and run.cancelled

    def __enter__(self) -> None:
        env = self._env
        # Registered first, then the tombstone checked: a cancel laid in between is seen by
        # the check or reaches the registered run, never neither.
        run = self.run = cancellation.register(env.task_id)
        state = self._state
        if state is not None and state.is_cancelled(env.task_id):
            run.cancelled = True
            cancellation.unregister(run)
            raise _Refused
        ctx = TaskContext(
            env.task_id, env.task_name, env.attempt, env.queue, env.enqueued_at, env.parent_id,
            env.idempotency_key, run,
        )  # fmt: skip
        self._token = _current.set(ctx)
        try:  # inlined _monitor_safely: this runs once per task
            get_task_monitor().task_running(env)
        except Exception:
            logger.exception("task monitor failed on task_running; the task is unaffected")
        if run_wrappers:
            stack = contextlib.ExitStack()
            try:
                for wrap in run_wrappers:
                    stack.enter_context(wrap(env))
            except BaseException:
                stack.close()
                _current.reset(self._token)
                cancellation.unregister(run)
                raise
            self._stack = stack

    def __exit__(self, *exc_info: Any) -> None:
        try:
            if self._stack is not None:
                self._stack.__exit__(*exc_info)  # a wrapper never swallows the task's error
        finally:
            _current.reset(self._token)
            if self.run is not None:
                cancellation.unregister(self.run)


def cancelled_error(env: TaskEnvelope) -> TaskCancelled:
    """The exception a cancelled run is concluded with."""
    return TaskCancelled(
        f"task {env.task_name} {env.task_id} was cancelled",
        task_id=env.task_id,
        task_name=env.task_name,
    )


def conclude(
    env: TaskEnvelope,
    spec: TaskSpec,
    started: float,
    *,
    value: Any = None,
    exc: BaseException | None = None,
    data: bytes | str = b"",
) -> Decision:
    """Turn one attempt's result or exception into a decision, applying the retry policy.

    ``data`` (the message as received) is kept in the dead letter so it can be requeued.
    """
    duration = time.perf_counter() - started
    if isinstance(exc, TaskCancelled):
        # The canceller recorded it (monitor, outcome); the run only stops and settles.
        logger.info("task %s %s cancelled (attempt %d)", env.task_name, env.task_id, env.attempt)
        outcome = Outcome(
            TaskStatus.CANCELLED,
            error="cancelled",
            error_type="TaskCancelled",
            attempts=env.attempt,
            finished_at=time.time(),
        )
        return Decision("cancelled", env, outcome=outcome)
    if exc is None:
        try:  # inlined _monitor_safely: this runs once per task
            get_task_monitor().task_completed(env, value, duration)
        except Exception:
            logger.exception("task monitor failed on task_completed; the task is unaffected")
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "task %s %s completed in %.3fs (attempt %d)",
                env.task_name, env.task_id, duration, env.attempt,
            )  # fmt: skip
        outcome = Outcome(
            TaskStatus.COMPLETED, value=value, attempts=env.attempt, finished_at=time.time()
        )
        return Decision("completed", env, outcome=outcome)
    error = f"{type(exc).__name__}: {exc}"
    trace = "".join(tb_module.format_exception(type(exc), exc, exc.__traceback__))
    policy = spec.retry
    timed_out = isinstance(exc, TaskTimeout)
    what = _failure_text(spec, env, exc, error, timed_out)
    if policy.should_retry(exc, env.attempt):
        delay = policy.delay(env.attempt, exc)
        # One line per retry: the traceback is logged once, with the final failure.
        logger.warning(
            "task %s %s %s; retrying in %.1fs", env.task_name, env.task_id, what, delay,
        )  # fmt: skip
        _monitor_safely("task_retrying", env, error, delay)
        return Decision("retry", env, delay=delay, next_envelope=env.next_attempt())
    logger.error(
        "task %s %s %s", env.task_name, env.task_id, what,
        exc_info=(type(exc), exc, exc.__traceback__) if exc.__traceback__ else None,
    )  # fmt: skip
    _monitor_safely("task_failed", env, error, trace, duration)
    outcome = Outcome(
        TaskStatus.FAILED,
        error=str(exc),
        error_type="TaskTimeout" if timed_out else type(exc).__name__,
        traceback=trace,
        attempts=env.attempt,
        finished_at=time.time(),
    )
    json_args = env.serializer == "json"
    letter = DeadLetter(
        id=new_task_id(),
        task_id=env.task_id,
        task_name=env.task_name,
        reason="timeout" if timed_out else "failed",
        error=str(exc),
        error_type=outcome.error_type,
        traceback=trace,
        args=list(env.args) if json_args else [],
        kwargs=dict(env.kwargs) if json_args else {},
        attempts=env.attempt,
        queue=env.queue,
        enqueued_at=env.enqueued_at,
        data=_data_text(data),
        requeueable=True,
    )
    return Decision("failed", env, outcome=outcome, dead_letter=letter)


def _failure_text(
    spec: TaskSpec, env: TaskEnvelope, exc: BaseException, error: str, timed_out: bool
) -> str:
    """What the log says happened to this attempt, after the task's name and id:
    ``failed (attempt 1/3): ValueError: boom`` or ``timed out after 2.0s (attempt 1/3)``.

    A timeout PacificPy raised is told by its limit alone: its message would repeat the
    task's name, and it has no traceback to show.
    """
    attempt = f"(attempt {env.attempt}/{spec.retry.max_attempts})"
    if timed_out and exc.__traceback__ is None and spec.timeout:
        return f"timed out after {spec.timeout}s {attempt}"
    return f"failed {attempt}: {error}"


def timeout_error(spec: TaskSpec) -> TaskTimeout:
    """The exception recorded for an attempt that ran past ``spec.timeout``."""
    return TaskTimeout(f"task {spec.name} ran past its timeout of {spec.timeout}s")


class _OverTime(Exception):
    """The task ran past its own ``timeout=``: only this becomes a ``TaskTimeout``."""


async def _limited(awaitable: Awaitable[Any], timeout: float) -> Any:
    """Await ``awaitable`` for at most ``timeout`` seconds; ``_OverTime`` past that.

    A ``TimeoutError`` the task raises itself (a socket or asyncio timeout inside it)
    passes through unchanged: it is the task's failure, not PacificPy's limit.
    """
    own: list[BaseException] = []

    async def run() -> Any:
        try:
            return await awaitable
        except (TimeoutError, asyncio.TimeoutError) as exc:
            own.append(exc)
            raise

    try:
        return await asyncio.wait_for(run(), timeout)
    except (TimeoutError, asyncio.TimeoutError) as exc:
        if own and exc is own[0]:
            raise
        raise _OverTime from None


async def execute(
    data: bytes | str,
    backend: BackgroundBackend,
    *,
    thread_executor: Executor | None = None,
    prepared: tuple[TaskEnvelope, TaskSpec] | None = None,
    admitted: bool = False,
) -> Decision:
    """Run one message on the current event loop; sync functions go to ``thread_executor``.

    Async tasks are cancelled at their timeout. A sync task past its timeout is reported
    as timed out while its thread runs on (Python cannot stop a thread). A task with
    flow limits runs only once admitted (else the decision is ``defer``).
    """
    prep = prepared if prepared is not None else prepare(data, backend)
    if isinstance(prep, Decision):
        return prep
    env, spec = prep
    if spec.flow is not None and not admitted and backend.flow_control:
        ticket = await flow.aadmit(env, spec, backend)
        if isinstance(ticket, flow.Held):
            return throttled(env, ticket)
        try:
            return await execute(
                data, backend, thread_executor=thread_executor, prepared=prep, admitted=True
            )
        finally:
            await ticket.arelease()
    started = time.perf_counter()
    running = _running(env, backend.state)
    try:
        with running:
            args, kwargs = spec.plan.from_wire(env.args, env.kwargs)  # declared types
            if spec.is_async:
                task = asyncio.current_task()
                if task is not None and running.run is not None:
                    running.run.attach(task)
                coro = spec.fn(*args, **kwargs)
                value = await (_limited(coro, spec.timeout) if spec.timeout else coro)
            else:
                loop = asyncio.get_running_loop()
                call = functools.partial(contextvars.copy_context().run, spec.fn, *args, **kwargs)
                fut = loop.run_in_executor(thread_executor, call)
                value = await (_limited(asyncio.shield(fut), spec.timeout) if spec.timeout else fut)
    except _Refused:
        return conclude(env, spec, started, exc=cancelled_error(env), data=data)
    except asyncio.CancelledError as exc:
        if not running.cancelled:
            if _cancel_requested():
                raise  # the worker is shutting down: not ours to record
            # Nobody cancelled this run: the task raised CancelledError itself (or awaited
            # something cancelled elsewhere). A failure like any other exception.
            return conclude(env, spec, started, exc=exc, data=data)
        uncancel = getattr(asyncio.current_task(), "uncancel", None)  # Python 3.11+
        if uncancel is not None:
            uncancel()  # the cancel was ours, and it is handled here
        return conclude(env, spec, started, exc=cancelled_error(env), data=data)
    except _OverTime:
        if running.cancelled:
            return conclude(env, spec, started, exc=cancelled_error(env), data=data)
        if not spec.is_async:
            _thread_runs_on(env, spec, fut)
        return conclude(env, spec, started, exc=timeout_error(spec), data=data)
    except (Exception, SystemExit) as exc:  # a task calling sys.exit() must not end a worker
        error = cancelled_error(env) if running.cancelled else exc
        return conclude(env, spec, started, exc=error, data=data)
    if running.cancelled:  # it returned after the cancel reached it: the cancel stands
        return conclude(env, spec, started, exc=cancelled_error(env), data=data)
    return conclude(env, spec, started, value=value)


def _thread_runs_on(env: TaskEnvelope, spec: TaskSpec, fut: asyncio.Future[Any]) -> None:
    """Say, every time, that a sync task past its timeout keeps its thread (Python cannot
    stop a thread; Celery's worker kills the process instead), and say when it returns."""
    logger.warning(
        "task %s %s passed its timeout of %ss; a sync task cannot be stopped, so its "
        "thread keeps running until the function returns (its result will be discarded)",
        env.task_name, env.task_id, spec.timeout,
    )  # fmt: skip

    def returned(_: asyncio.Future[Any]) -> None:
        logger.warning(
            "timed-out task %s %s finally returned; its result is discarded",
            env.task_name, env.task_id,
        )  # fmt: skip

    fut.add_done_callback(returned)


async def _attached(awaitable: Awaitable[Any], run: cancellation.Run | None) -> Any:
    """Await ``awaitable`` in a task a cancel of ``run`` can reach."""
    task = asyncio.current_task()
    if run is not None and task is not None:
        run.attach(task)
    return await awaitable


def call_sync(
    env: TaskEnvelope, spec: TaskSpec, state: TaskState | None = None
) -> tuple[Any, BaseException | None]:
    """Call the task in this thread with its context set; ``(value, None)`` or ``(None, exc)``.

    An async function runs on a fresh event loop with its timeout applied; a sync one
    is called directly and its timeout is the caller's to enforce. With ``state`` a
    cancelled task (a tombstone in it) is refused before it starts, and a run a cancel
    reached ends with ``TaskCancelled``.
    """
    running = _running(env, state)
    try:
        with running:
            args, kwargs = spec.plan.from_wire(env.args, env.kwargs)  # declared types
            if spec.is_async:
                coro = spec.fn(*args, **kwargs)
                limited = _limited(coro, spec.timeout) if spec.timeout else coro
                value = asyncio.run(_attached(limited, running.run))
            else:
                value = spec.fn(*args, **kwargs)
    except _Refused:
        return None, cancelled_error(env)
    except _OverTime:
        return None, cancelled_error(env) if running.cancelled else timeout_error(spec)
    # A task calling sys.exit() must not end a worker; and in a thread nothing outside
    # cancels the run, so a CancelledError is one the task raised itself.
    except (Exception, SystemExit, asyncio.CancelledError) as exc:
        return None, cancelled_error(env) if running.cancelled else exc
    if running.cancelled:  # it returned after the cancel reached it: the cancel stands
        return None, cancelled_error(env)
    return value, None


def execute_sync(
    data: bytes | str,
    backend: BackgroundBackend,
    *,
    timeout_errors: tuple[type[BaseException], ...] = (),
    prepared: tuple[TaskEnvelope, TaskSpec] | None = None,
    admitted: bool = False,
) -> Decision:
    """Run one message in the calling thread (thread and process workers).

    A sync function's timeout is the caller's to enforce: Celery's time limits raise one
    of ``timeout_errors``, which is recorded as ``TaskTimeout``. A task with flow limits
    runs only once admitted (else the decision is ``defer``).
    """
    prep = prepared if prepared is not None else prepare(data, backend)
    if isinstance(prep, Decision):
        return prep
    env, spec = prep
    if spec.flow is not None and not admitted and backend.flow_control:
        return run_admitted(
            env,
            spec,
            backend,
            lambda: execute_sync(
                data, backend, timeout_errors=timeout_errors, prepared=prep, admitted=True
            ),
        )
    started = time.perf_counter()
    value, exc = call_sync(env, spec, backend.state)
    if exc is not None and timeout_errors and isinstance(exc, timeout_errors):
        exc = timeout_error(spec)
    if exc is not None:
        return conclude(env, spec, started, exc=exc, data=data)
    return conclude(env, spec, started, value=value)


def run_admitted(
    env: TaskEnvelope, spec: TaskSpec, backend: BackgroundBackend, run: Callable[[], R]
) -> R | Decision:
    """``run()`` once ``env`` is admitted under its task's flow limits, giving the
    concurrency slot back after; the ``defer`` decision if a limit holds it back."""
    ticket = flow.admit(env, spec, backend)
    if isinstance(ticket, flow.Held):
        return throttled(env, ticket)
    try:
        return run()
    finally:
        ticket.release()


def throttled(env: TaskEnvelope, held: flow.Held) -> Decision:
    """The decision for a start a limit held back: the same attempt, again after a wait.

    Nothing of the attempt is spent: the monitor counts the task as throttled and its
    record stays ``queued``.
    """
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "task %s %s held back by its %s; deferred %.2fs",
            env.task_name, env.task_id, held.limit, held.delay,
        )  # fmt: skip
    _monitor_safely("task_throttled", env, held.limit)
    return Decision("defer", env, delay=held.delay, next_envelope=env)


def abandon(task_id: str, name: str) -> None:
    """Log and record a task left unfinished at shutdown."""
    logger.error("task %s %s abandoned at shutdown: still queued or running", name, task_id)
    _monitor_safely("task_abandoned", task_id, name)


def _monitor_safely(event: str, *args: Any) -> None:
    try:
        getattr(get_task_monitor(), event)(*args)
    except Exception:
        logger.exception("task monitor failed on %s; the task's outcome is unaffected", event)


# -- carrying out a decision ---------------------------------------------------------------
def next_message(decision: Decision, signing_key: bytes | None) -> Message:
    """The message of a retry decision's next attempt."""
    nxt = decision.next_envelope
    assert nxt is not None
    return Message(nxt, _codec.encode(nxt, signing_key=signing_key), trusted=True)


def _final_steps(
    decision: Decision,
    data: bytes | str,
    counted: tuple[str, int] | None,
    store_outcome: bool,
) -> list[tuple[str, Any]]:
    """The state writes of a final decision, in order: keep the letter, then finish."""
    steps: list[tuple[str, Any]] = []
    letter = decision.dead_letter
    if letter is not None:
        if not letter.data:
            letter.data = _data_text(data)
        steps.append(("add_dead_letter", letter))
    end = _ending(decision, counted, store_outcome)
    if end.outcome is not None or end.deliveries is not None or end.release is not None:
        steps.append(("finish", end))  # (on ARQ a success leaves nothing to finish)
    return steps


def _cancel_requested() -> bool:
    """True if the current asyncio task was asked to cancel (``Task.cancel``), as a worker's
    shutdown does; False for a CancelledError the code raised itself. Before Python 3.11,
    which cannot tell them apart, always True."""
    cancelling = getattr(asyncio.current_task(), "cancelling", None)
    return cancelling is None or cancelling() > 0


def _ending(decision: Decision, counted: tuple[str, int] | None, store_outcome: bool) -> Ending:
    """What a final decision writes in one ``finish``: forget the count, release the key
    (not after a success), store the outcome."""
    env = decision.envelope
    release = None
    if decision.kind != "completed" and env is not None and env.idempotency_key:
        release = (env.task_name, env.idempotency_key)
    return Ending(decision.task_id, decision.outcome if store_outcome else None, counted, release)


def _step_failed(decision: Decision, name: str, exc: BaseException) -> None:
    """A step of a dead-letter decision failed: log it (the letter in full), go on."""
    if name == "add_dead_letter" and decision.dead_letter is not None:
        logger.error(
            "dead letter of task %s not stored (%s: %s); the message is not requeued: %s",
            decision.task_id, type(exc).__name__, exc, decision.dead_letter.to_dict(),
        )  # fmt: skip
    else:
        logger.error(
            "could not %s for dead-lettered task %s (%s: %s); the message is not requeued",
            name, decision.task_id, type(exc).__name__, exc,
        )  # fmt: skip


def settle(
    decision: Decision,
    data: bytes | str,
    state: TaskState,
    publish: Callable[[Message, float], Any],
    *,
    signing_key: bytes | None = None,
    counted: tuple[str, int] | None = None,
    store_outcome: bool = True,
    interrupts: tuple[type[BaseException], ...] = (),
) -> Any:
    """Carry out ``decision``, once, for any backend.

    A retry publishes the next attempt's message with ``publish(message, delay)`` (and
    returns what it returns); a deferred start publishes the same attempt again. A final
    decision keeps the dead letter and finishes in the ``state``: forget the ``counted``
    delivery ``(task_id, attempt)``, release the idempotency key (not after a success),
    store the outcome (unless the transport stores it: ``store_outcome=False``).

    A dead-letter decision is final: each step is tried on its own, and a failure is
    logged, never raised, so the caller acknowledges the message (sending it back would
    decide the same again and keep one more letter each time). Any other failure raises.
    ``interrupts`` are exceptions that fire once at any point (Celery's soft time limit):
    a step they interrupt is tried once more.
    """
    if decision.kind in REPUBLISH:
        result = _retrying(interrupts, publish, next_message(decision, signing_key), decision.delay)
        if counted is not None and decision.kind == "retry":
            # A deferred start keeps its count: the deliveries its worker died in stand.
            _retrying(interrupts, state.forget_deliveries, *counted)
        return result
    final = decision.dead_letter is not None
    if not final and not interrupts:  # the common case, a success: one finish, as is
        state.finish(_ending(decision, counted, store_outcome))
        return None
    for name, arg in _final_steps(decision, data, counted, store_outcome):
        try:
            _retrying(interrupts, getattr(state, name), arg)
        except Exception as exc:
            if not final:
                raise
            _step_failed(decision, name, exc)
    return None


def _retrying(
    interrupts: tuple[type[BaseException], ...], step: Callable[..., Any], *args: Any, **kw: Any
) -> Any:
    try:
        return step(*args, **kw)
    except interrupts:
        return step(*args, **kw)


async def settle_async(
    decision: Decision,
    data: bytes | str,
    state: TaskState,
    publish: Callable[[Message, float], Awaitable[Any]],
    *,
    signing_key: bytes | None = None,
    store_outcome: bool = True,
    uncount: Callable[[], Awaitable[Any]] | None = None,
) -> Any:
    """:func:`settle` for an event-loop worker: the state's async methods, awaited.

    ``uncount`` gives back the delivery a transport counted itself (ARQ's ``job_try``)
    before a deferred start is published again: a held-back start is no delivery.
    """
    if decision.kind == "defer" and uncount is not None:
        await uncount()
    if decision.kind in REPUBLISH:
        return await publish(next_message(decision, signing_key), decision.delay)
    final = decision.dead_letter is not None
    for name, arg in _final_steps(decision, data, None, store_outcome):
        try:
            await getattr(state, "a" + name)(arg)
        except Exception as exc:
            if not final:
                raise
            _step_failed(decision, name, exc)
    return None


def requeue_message(letter: DeadLetter, backend: BackgroundBackend) -> Message:
    """The message that requeues ``letter``: a fresh first attempt of the same task.

    The kept message is decoded and verified as a worker of ``backend`` would (its signing
    key, its ``allow_pickle``) before anything is changed, so the caller can leave the letter
    where it is when this raises.

    Raises:
        DeadLetterNotRequeueable: the message never decoded and verified (forged, garbage,
            refused pickle), so requeueing it could launder it into a valid task.
        DeadLetterUndecodable: the message no longer decodes here (the signing key was
            rotated, pickle is refused); ``cause`` holds the ``MessageRejected``.
    """
    from pacificpy.errors import DeadLetterNotRequeueable, DeadLetterUndecodable

    if not letter.requeueable:
        raise DeadLetterNotRequeueable(
            f"dead letter {letter.id} ({letter.reason}) cannot be requeued: its message never "
            "decoded and verified",
            letter_id=letter.id,
            task_id=letter.task_id,
            task_name=letter.task_name,
        )
    data = letter.data.encode("utf-8", "surrogateescape")
    try:
        env = _codec.decode(
            data, signing_key=backend.signing_key, allow_pickle=backend.allow_pickle
        ).fresh()
    except MessageRejected as exc:
        raise DeadLetterUndecodable(
            f"dead letter {letter.id} cannot be requeued: {exc}; it stays in the dead-letter queue",
            letter_id=letter.id,
            task_id=letter.task_id,
            task_name=letter.task_name,
            cause=exc,
        ) from exc
    raw = _codec.encode(env, signing_key=backend.signing_key)
    return Message(env, raw)
