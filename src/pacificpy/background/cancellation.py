"""The task runs of this process, so a cancel can reach the one it names.

Every run (``execution._running``) registers a :class:`Run` under its task id while it
runs. A cancel that reaches this process (laid by this process's in-memory state, or
heard by a Redis state's watcher from another process) calls :func:`deliver`: the run's
``cancelled`` flag turns true (what a sync task sees as ``current_task().cancelled``) and
an async run's asyncio task is cancelled on its loop, so the task gets ``CancelledError``
at its next await.

No I/O and no lock on the run's path: registering is a dict store, unregistering a pop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pacificpy.background import config

__all__ = ["CANCEL_MESSAGE", "Run", "deliver", "register", "running", "unregister"]

#: The message of the ``CancelledError`` a cancel raises in an async task.
CANCEL_MESSAGE = "pacificpy: task cancelled"


class Run:
    """One running attempt of one task in this process."""

    __slots__ = ("cancelled", "task", "task_id")

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.cancelled = False
        self.task: asyncio.Task[Any] | None = None

    def attach(self, task: asyncio.Task[Any]) -> None:
        """Cancel ``task`` (an async run's asyncio task) when the run is cancelled; at once
        if the cancel came first."""
        self.task = task
        if self.cancelled:
            task.cancel(CANCEL_MESSAGE)

    def cancel(self) -> None:
        """Set the flag; cancel the asyncio task on its own loop (from any thread)."""
        self.cancelled = True
        task = self.task
        if task is None or task.done():
            return
        try:
            task.get_loop().call_soon_threadsafe(self._cancel_task)
        except RuntimeError:  # the loop closed meanwhile: the run is over
            pass

    def _cancel_task(self) -> None:
        # On the task's loop. The task may have moved on to another run since (the local
        # executor's consumers run one task after another): only a run still attached,
        # i.e. not yet unregistered, is cancelled.
        task = self.task
        if task is not None and not task.done():
            task.cancel(CANCEL_MESSAGE)


# task id -> its run in this process (a retry runs under the same id, never at once).
_runs: dict[str, Run] = {}


@config.resets(__name__, "_runs")
def _forget_runs() -> None:
    _runs.clear()


def register(task_id: str) -> Run:
    run = _runs[task_id] = Run(task_id)
    return run


def unregister(run: Run) -> None:
    run.task = None  # the run is over: a cancel still on its way must not reach the task
    if _runs.get(run.task_id) is run:
        del _runs[run.task_id]


def running(task_id: str) -> Run | None:
    """The run of ``task_id`` in this process, if it runs here now."""
    return _runs.get(task_id)


def deliver(task_id: str) -> bool:
    """Cancel the run of ``task_id`` if it runs in this process; True if it does."""
    run = _runs.get(task_id)
    if run is None:
        return False
    run.cancel()
    return True
