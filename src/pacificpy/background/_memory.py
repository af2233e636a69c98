"""What the in-process backends share: outcomes, dead letters and idempotency keys in memory.

The local executor and the testing backends (eager, capturing) keep their state in this
process; this base class holds it once, with the contract methods that only read it.
"""

from __future__ import annotations

import heapq
import threading
import time

from pacificpy.background import _codec, execution, registry
from pacificpy.background._outcomes import OutcomeBoard
from pacificpy.background.backend import BackgroundBackend
from pacificpy.background.dead_letter import DeadLetter, MemoryDeadLetterStore
from pacificpy.background.execution import Decision
from pacificpy.background.task import Message, Outcome, TaskEnvelope, TaskSpec
from pacificpy.errors import TaskFailed
from pacificpy.types import TaskStatus

__all__ = ["InMemoryBackend"]

_SCALARS = frozenset({str, int, float, bool, type(None)})

#: The clock of idempotency-key expiry (tests replace it).
_clock = time.monotonic


class InMemoryBackend(BackgroundBackend):
    """A backend whose outcomes, dead letters and idempotency keys live in this process."""

    def __init__(
        self,
        *,
        allow_pickle: bool = False,
        shutdown_timeout: float = 30.0,
        max_deliveries: int = 5,
    ) -> None:
        super().__init__(
            allow_pickle=allow_pickle,
            shutdown_timeout=shutdown_timeout,
            max_deliveries=max_deliveries,
        )
        self._outcomes = OutcomeBoard()
        self._dead = MemoryDeadLetterStore()
        self._keys: dict[tuple[str, str], float] = {}  # (task name, key) -> expiry
        self._key_expiry: list[tuple[float, tuple[str, str]]] = []  # heap by expiry
        self._keys_lock = threading.Lock()

    # -- producing -----------------------------------------------------------------------
    def _claim(self, env: TaskEnvelope) -> bool:
        """False when an earlier task holds ``env``'s idempotency key (enqueue nothing).

        A first attempt also forgets any outcome left under its id (a requeued task, or a
        key released after a failure, starts afresh).
        """
        if env.attempt != 1:
            return True
        if env.idempotency_key is not None:
            key = (env.task_name, env.idempotency_key)
            now = _clock()
            with self._keys_lock:
                expires = self._keys.get(key)
                if expires is not None and expires > now:
                    return False
                self._prune_keys(now)
                expires = now + self.idempotency_ttl
                self._keys[key] = expires
                heapq.heappush(self._key_expiry, (expires, key))
        self._outcomes.clear(env.task_id)
        return True

    def _prune_keys(self, now: float) -> None:
        """Forget keys whose TTL has passed (amortised: each key is pushed and popped once).

        The heap may hold stale entries (a key released early, or taken again); when they
        outnumber the live keys it is rebuilt, so its size stays within twice theirs.
        """
        heap, keys = self._key_expiry, self._keys
        while heap and heap[0][0] <= now:
            expires, key = heapq.heappop(heap)
            if keys.get(key) == expires:
                del keys[key]
        if len(heap) > 2 * len(keys) + 64:
            self._key_expiry = [(e, k) for k, e in keys.items()]
            heapq.heapify(self._key_expiry)

    def _retry_message(self, decision: Decision) -> Message:
        """The message of a retry decision's next attempt."""
        assert decision.next_envelope is not None
        nxt = decision.next_envelope
        return Message(nxt, _codec.encode(nxt, signing_key=self.signing_key), trusted=True)

    def _finish(self, decision: Decision, message: Message) -> None:
        """Carry out a final decision: keep the dead letter, free the key, post the outcome."""
        letter = decision.dead_letter
        if letter is not None:
            if not letter.data:
                letter.data = message.data.decode("utf-8", "replace")
            self._dead.add(letter)
        env = decision.envelope
        if decision.kind != "completed" and env is not None and env.idempotency_key:
            with self._keys_lock:
                self._keys.pop((env.task_name, env.idempotency_key), None)
        if decision.task_id is not None and decision.outcome is not None:
            self._outcomes.post(decision.task_id, decision.outcome)

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

    # -- results -------------------------------------------------------------------------
    async def wait_result(self, task_id: str, timeout: float | None = None) -> Outcome:
        return await self._outcomes.wait(task_id, timeout)

    def wait_result_sync(self, task_id: str, timeout: float | None = None) -> Outcome:
        return self._outcomes.wait_sync(task_id, timeout)

    async def get_status(self, task_id: str) -> TaskStatus | None:
        return self.get_status_sync(task_id)

    def get_status_sync(self, task_id: str) -> TaskStatus | None:
        outcome = self._outcomes.get(task_id)
        if outcome is not None:
            return outcome.status
        return super().get_status_sync(task_id)

    # -- dead letters --------------------------------------------------------------------
    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return self._dead.list(limit)

    def dead_letters_sync(self, limit: int = 100) -> list[DeadLetter]:
        return self._dead.list(limit)

    async def requeue_dead_letter(self, letter_id: str) -> str:
        return self.requeue_dead_letter_sync(letter_id)

    def requeue_dead_letter_sync(self, letter_id: str) -> str:
        letter = self._dead.get(letter_id)
        if letter is None:
            raise KeyError(f"no dead letter with id {letter_id!r}")
        message = execution.requeue_message(letter, self)  # raises with the letter in place
        if self._dead.pop(letter_id) is None:  # requeued or purged meanwhile
            raise KeyError(f"no dead letter with id {letter_id!r}")
        self._outcomes.clear(message.task_id)
        try:
            self.submit(message, None)
        except TaskFailed:
            raise  # an eager backend ran it (and failed again): the letter was used
        except BaseException:
            self._dead.add(letter)  # not queued: back where it was
            raise
        return message.task_id

    async def purge_dead_letters(self) -> int:
        return self._dead.purge()

    def purge_dead_letters_sync(self) -> int:
        return self._dead.purge()
