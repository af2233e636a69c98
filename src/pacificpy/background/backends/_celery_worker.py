"""Worker-side pieces of the Celery backend, imported only inside a Celery worker.

:class:`PacificRequest` is the ``Request`` class of every PacificPy Celery task. It keeps
Celery's behaviour and adds what Celery does in the worker's main process, where the task
body cannot: when the hard time limit kills a task, or a worker process is lost and the
message is not requeued, the attempt is recorded (retried or dead-lettered by the task's
policy) so ``handle.result()`` never waits forever.
"""

from __future__ import annotations

import logging
from typing import Any

from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import WorkerLostError
from celery.worker import state as worker_state
from celery.worker.request import Request

from pacificpy.background.backends.celery_backend import backend_for

__all__ = ["PacificRequest"]

logger = logging.getLogger("pacificpy.background")


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
            backend.ended_by_worker(data, exc, timed_out=timed_out)
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
