"""What the in-process backends share: a :class:`MemoryTaskState` and fast-path decoding.

The local executor and the testing backends (eager, capturing) keep their state in this
process; the dead letters, results and idempotency of the base backend work over it.
"""

from __future__ import annotations

import time
from typing import Any

from pacificpy.background import registry
from pacificpy.background._outcomes import OutcomeBoard
from pacificpy.background.backend import BackgroundBackend
from pacificpy.background.backends.state import MemoryTaskState
from pacificpy.background.dead_letter import DeadLetter, MemoryDeadLetterStore
from pacificpy.background.task import Message, TaskEnvelope, TaskSpec

__all__ = ["InMemoryBackend"]

_SCALARS = frozenset({str, int, float, bool, type(None)})

#: The clock of idempotency-key expiry (tests replace it).
_clock = time.monotonic


class InMemoryBackend(BackgroundBackend):
    """A backend whose outcomes, dead letters and idempotency keys live in this process."""

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
