"""Dead letters: tasks that failed for good or could not be run, kept for a person to see."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from typing import Any, Protocol

from pacificpy.background.monitor.previews import cap_error, cap_traceback, preview_call

__all__ = ["DeadLetter", "DeadLetterStore", "MemoryDeadLetterStore", "dead_letter_view"]


@dataclasses.dataclass
class DeadLetter:
    """One task in the dead-letter queue.

    ``reason`` is ``failed`` (last attempt raised), ``timeout`` (last attempt timed out),
    ``unknown_task``, ``rejected`` (undecodable, unsigned, tampered, refused pickle,
    arguments that no longer bind) or ``poison`` (delivered ``max_deliveries`` times).
    ``data`` is the message as received; ``requeueable`` is true only for messages that
    decoded and verified, so a forged message can never be requeued into a valid one.
    ``error`` keeps at most ``ERROR_CHARS`` (4 KiB) characters, its head, and
    ``traceback`` at most ``TRACEBACK_CHARS`` (16 KiB), its tail (see
    :mod:`pacificpy.background.monitor.previews`).
    """

    id: str
    task_id: str | None
    task_name: str | None
    reason: str
    error: str
    error_type: str | None = None
    traceback: str | None = None
    args: list[Any] = dataclasses.field(default_factory=list)
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    attempts: int = 0
    queue: str = "default"
    enqueued_at: float | None = None
    failed_at: float = dataclasses.field(default_factory=time.time)
    data: str = ""
    requeueable: bool = False

    def __post_init__(self) -> None:
        # Kept for a person to read: the error's head and the traceback's tail are enough
        # (the message itself, ``data``, is kept whole so the task can be requeued).
        self.error = cap_error(self.error)
        if self.traceback is not None:
            self.traceback = cap_traceback(self.traceback)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DeadLetter:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


def dead_letter_view(letter: DeadLetter) -> dict[str, Any]:
    """What a person is shown of a dead letter (the dashboard's API, ``pacificpy tasks``):
    no raw message, the arguments as a redacted preview."""
    return {
        "id": letter.id,
        "task_id": letter.task_id,
        "task_name": letter.task_name,
        "reason": letter.reason,
        "error": letter.error,
        "error_type": letter.error_type,
        "traceback": letter.traceback,
        "args_preview": preview_call(letter.args, letter.kwargs, task=letter.task_name),
        "attempts": letter.attempts,
        "queue": letter.queue,
        "enqueued_at": letter.enqueued_at,
        "failed_at": letter.failed_at,
        "requeueable": letter.requeueable,
    }


class DeadLetterStore(Protocol):
    """Where a backend keeps its dead letters (sync: in memory, or a sync Redis client)."""

    def add(self, letter: DeadLetter) -> None: ...
    def list(self, limit: int = 100) -> list[DeadLetter]: ...
    def get(self, letter_id: str) -> DeadLetter | None: ...
    def pop(self, letter_id: str) -> DeadLetter | None: ...
    def purge(self) -> int: ...


class MemoryDeadLetterStore:
    """In-process dead-letter store, newest first, bounded to ``max_size`` letters."""

    def __init__(self, max_size: int = 10_000) -> None:
        self.max_size = max_size
        self._letters: OrderedDict[str, DeadLetter] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, letter: DeadLetter) -> None:
        with self._lock:
            self._letters[letter.id] = letter
            self._letters.move_to_end(letter.id)
            while len(self._letters) > self.max_size:
                self._letters.popitem(last=False)

    def list(self, limit: int = 100) -> list[DeadLetter]:
        with self._lock:
            items = list(reversed(self._letters.values()))
        return items[:limit]

    def get(self, letter_id: str) -> DeadLetter | None:
        with self._lock:
            return self._letters.get(letter_id)

    def pop(self, letter_id: str) -> DeadLetter | None:
        with self._lock:
            return self._letters.pop(letter_id, None)

    def purge(self) -> int:
        with self._lock:
            n = len(self._letters)
            self._letters.clear()
            return n

    def __len__(self) -> int:
        return len(self._letters)
