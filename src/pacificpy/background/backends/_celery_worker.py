"""Worker-side pieces of the Celery backend, imported only inside a Celery worker.

:func:`deliver` is the body of every PacificPy Celery task: receive the message, run it
with :func:`pacificpy.background.execution.execute_sync`, carry out the decision with
:func:`~pacificpy.background.execution.settle`, then Celery acknowledges it.

:class:`PacificRequest` is the ``Request`` class of every PacificPy Celery task. It keeps
Celery's behaviour and adds what Celery does in the worker's main process, where the task
body cannot: when the hard time limit kills a task, or a worker process is lost and the
message is not requeued, the attempt is recorded (retried or dead-lettered by the task's
policy) so ``handle.result()`` never waits forever.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, NoReturn

import billiard.common
from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import WorkerLostError
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.worker import state as worker_state
from celery.worker.request import Request

from pacificpy.background import execution
from pacificpy.background.backends._celery_app import backend_for
from pacificpy.background.execution import Decision
from pacificpy.errors import MessageRejected, TaskNotFound

if TYPE_CHECKING:
    from pacificpy.background.backends.celery_backend import CeleryBackgroundBackend

__all__ = ["PacificRequest", "carry_out", "deliver", "ended_by_worker", "unknown_task"]

logger = logging.getLogger("pacificpy.background")


#: Seconds a worker waits before it sends back a message whose end it could not record
#: (the state store is down): RabbitMQ redelivers a rejected message at once, and without
#: a pause one message would loop through the worker as fast as it can.
SEND_BACK_PAUSE = 1.0


def deliver(
    backend: CeleryBackgroundBackend,
    data: object,
    *,
    redelivered: bool = False,
    deliveries: int | None = None,
) -> None:
    """Run one delivered message in this (worker) process and carry out the decision.

    ``redelivered`` (set by the broker when a message comes back unacknowledged) feeds the
    poison guard, counted in the state; ``deliveries`` is the broker's own count when it
    keeps one (a quorum queue's ``x-delivery-count`` + 1). Past ``backend.max_deliveries``
    the message is a dead letter.

    A decision to dead-letter the message is final: the message is acknowledged even if
    storing the letter or the outcome fails (logged), so it can never loop through the
    queue adding a letter per delivery.

    A message is never acknowledged as done without its end recorded: if the state
    cannot be read or written (down, or not configured), the message goes back to the
    queue (after :data:`SEND_BACK_PAUSE`), to run again once the state answers.

    Raises:
        Reject: the end of a task that is not dead-lettered could not be recorded; the
            message goes back.
    """
    if not isinstance(data, (str, bytes)):
        shown = repr(data)[:100_000]
        decision = execution.reject(
            shown,
            MessageRejected(f"task argument is a {type(data).__name__}, not a message"),
            reason="rejected",
        )
        carry_out(backend, decision, shown)
        return
    prep = execution.prepare(data, backend)
    counted: tuple[str, int] | None = None
    if not isinstance(prep, Decision) and (redelivered or deliveries is not None):
        env = prep[0]
        if deliveries is None:
            counted = (env.task_id, env.attempt)
        try:
            guard = backend.poison_guard(data, env, deliveries=deliveries, count=deliveries is None)
        except Exception as exc:
            _send_back(env.task_id, exc)
        prep = guard or prep
    if isinstance(prep, Decision):
        decision = prep
    else:
        decision = execution.execute_sync(
            data, backend, timeout_errors=(SoftTimeLimitExceeded,), prepared=prep
        )
        if _pool_terminating():
            # The pool's terminate handler raised SystemExit inside the task (the hard time
            # limit, or a cold shutdown), which execution records as the task's own failure.
            # It is not: the main process records this attempt (PacificRequest.on_timeout)
            # or the unacknowledged message goes back. Recording it here too would race that.
            raise SystemExit(1)
    try:
        carry_out(backend, decision, data, counted)
    except Exception as exc:
        _send_back(decision.task_id, exc)


def _send_back(task_id: str | None, exc: Exception) -> NoReturn:
    """The state failed: log it, pause, and give the message back unacknowledged."""
    logger.exception(
        "could not record the end of task %s (%s: %s); the message goes back to the queue",
        task_id, type(exc).__name__, exc,
    )  # fmt: skip
    time.sleep(SEND_BACK_PAUSE)
    raise Reject(exc, requeue=True) from exc


def _pool_terminating() -> bool:
    """True in a pool process whose terminate signal has arrived: billiard's handler then
    raises ``SystemExit`` wherever the process is, and it must end."""
    flag = getattr(billiard.common, "_should_have_exited", None)
    return bool(flag and flag[0])


def carry_out(
    backend: CeleryBackgroundBackend,
    decision: Decision,
    data: str | bytes,
    counted: tuple[str, int] | None = None,
) -> None:
    """Settle ``decision`` (:func:`~pacificpy.background.execution.settle`); the soft time
    limit may fire once while it runs, and the interrupted step is done again.

    ``counted`` is the ``(task_id, attempt)`` whose poison-guard count is then forgotten.
    """
    execution.settle(
        decision,
        data,
        backend.state,
        backend.publish_now,
        signing_key=backend.signing_key,
        counted=counted,
        interrupts=(SoftTimeLimitExceeded,),
    )


def ended_by_worker(
    backend: CeleryBackgroundBackend, data: str, exc: BaseException, *, timed_out: bool
) -> None:
    """Record an attempt the worker process ended (hard time limit, or the process was
    lost without a requeue): a timeout or failure, retried or dead-lettered by policy."""
    prep = execution.prepare(data, backend)
    if isinstance(prep, Decision):
        carry_out(backend, prep, data)
        return
    env, spec = prep
    error: BaseException = execution.timeout_error(spec) if timed_out else exc
    started = time.perf_counter() - (spec.timeout or 0.0)
    decision = execution.conclude(env, spec, started, exc=error, data=data)
    carry_out(backend, decision, data, (env.task_id, env.attempt))


def unknown_task(backend: CeleryBackgroundBackend, data: str, name: str | None) -> None:
    """A message Celery could not route to a task: a dead letter, never a crash."""
    prep = execution.prepare(data, backend)
    if not isinstance(prep, Decision):
        env = prep[0]
        prep = execution.reject(
            data,
            TaskNotFound(name or env.task_name),
            reason="unknown_task",
            envelope=env,
        )
    carry_out(backend, prep, data)


class PacificRequest(Request):  # type: ignore[misc]
    """Celery's request, plus PacificPy bookkeeping for attempts the worker ended."""

    def _message_text(self) -> str | None:
        args = self.args
        if isinstance(args, (list, tuple)) and len(args) == 1 and isinstance(args[0], str):
            return args[0]
        return None

    def _record(self, exc: BaseException, *, timed_out: bool) -> None:
        backend = backend_for(self.task.app)
        data = self._message_text()
        if backend is None or data is None:
            return
        try:
            ended_by_worker(backend, data, exc, timed_out=timed_out)
        except Exception:
            logger.exception("could not record the end of task %s", self.id)

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if not soft and not worker_state.should_terminate:
            self._record(TimeoutError(f"hard time limit ({timeout}s) exceeded"), timed_out=True)

    def on_failure(
        self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
    ) -> None:
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
        exc = exc_info.exception
        if isinstance(exc, ExceptionWithTraceback):
            exc = exc.exc
        requeued = self.task.acks_late and self.task.reject_on_worker_lost
        if isinstance(exc, WorkerLostError) and not requeued and not worker_state.should_terminate:
            self._record(exc, timed_out=False)
