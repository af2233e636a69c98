"""Flow control: per-task concurrency, rate limits and priorities (SPEC §10.5).

``@background(concurrency=N, rate_limit="100/m", priority=0..9)`` is parsed here into a
:class:`FlowLimits` kept on the task's spec (``None`` for a task without limits, so such a
task pays one attribute test and nothing else). Limits hold across every worker process:
the backend's :class:`~pacificpy.background.backends.state.TaskState` decides each start
atomically (:meth:`~pacificpy.background.backends.state.TaskState.admit`):

- a concurrency slot is a *lease*: it expires ``concurrency_lease`` seconds after its
  holder last renewed it, so a worker killed mid-task gives its slot back by itself. The
  :class:`_Renewer` thread of each process renews the leases its running tasks hold;
- a rate limit is a sliding window of start times: at most ``count`` starts in any
  ``per`` seconds.

A start the state refuses is not run: :mod:`pacificpy.background.execution` defers the
message (published again after :func:`defer_delay`, as a retry waits, holding no worker
slot and spending no attempt) and the monitor counts it as throttled.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import re
import threading
import time
from typing import TYPE_CHECKING, NamedTuple

from pacificpy.background import config
from pacificpy.background.task import new_task_id
from pacificpy.errors import ConfigurationError

if TYPE_CHECKING:
    from pacificpy.background.backend import BackgroundBackend
    from pacificpy.background.backends.state import TaskState
    from pacificpy.background.task import TaskEnvelope, TaskSpec

__all__ = [
    "MAX_PRIORITY",
    "FlowLimits",
    "Held",
    "Lease",
    "Rate",
    "aadmit",
    "admit",
    "check_priority",
    "defer_delay",
    "limits",
    "parse_rate",
]

logger = logging.getLogger("pacificpy.background")

#: Priorities run from 0 (the default) to this; higher runs first within a queue.
MAX_PRIORITY = 9
#: Longest wait of a deferred start, in seconds (before jitter).
MAX_DEFER = 2.0

_UNITS = (("s", 1.0), ("m", 60.0), ("h", 3600.0))
_RATE = re.compile(r"^\s*(\d+)\s*/\s*([smh])\s*$")


@dataclasses.dataclass(frozen=True, slots=True)
class Rate:
    """``count`` starts per ``per`` seconds."""

    count: int
    per: float


@dataclasses.dataclass(frozen=True, slots=True)
class FlowLimits:
    """The limits of one task: at most ``concurrency`` runs at once, ``rate`` starts."""

    concurrency: int | None = None
    rate: Rate | None = None


def parse_rate(text: str) -> Rate:
    """``"100/m"`` -> ``Rate(100, 60.0)`` (units ``s``, ``m``, ``h``).

    Raises:
        ConfigurationError: not of that form, or a count below 1.
    """
    match = _RATE.match(text) if isinstance(text, str) else None
    if match is None or int(match.group(1)) < 1:
        raise ConfigurationError(
            f"rate_limit must be a count of at least 1 per second, minute or hour, like "
            f"'5/s', '100/m' or '1000/h'; not {text!r}"
        )
    return Rate(int(match.group(1)), dict(_UNITS)[match.group(2)])


def limits(concurrency: int | None, rate_limit: str | None) -> FlowLimits | None:
    """The :class:`FlowLimits` of ``@background``'s options; None when there are none.

    Raises:
        ConfigurationError: ``concurrency`` is not a positive integer, or ``rate_limit``
            does not parse (:func:`parse_rate`).
    """
    if concurrency is not None and (
        type(concurrency) is not int or concurrency < 1  # bool is no concurrency
    ):
        raise ConfigurationError(
            f"concurrency must be a positive integer (runs at once), not {concurrency!r}"
        )
    rate = parse_rate(rate_limit) if rate_limit is not None else None
    if concurrency is None and rate is None:
        return None
    return FlowLimits(concurrency, rate)


def check_priority(priority: object) -> int:
    """``priority`` if it is an integer from 0 to :data:`MAX_PRIORITY`.

    Raises:
        ConfigurationError: anything else.
    """
    if type(priority) is not int or not 0 <= priority <= MAX_PRIORITY:
        raise ConfigurationError(
            f"priority must be an integer from 0 to {MAX_PRIORITY} (higher runs first), "
            f"not {priority!r}"
        )
    return priority


# -- admission -------------------------------------------------------------------------------
class Held(NamedTuple):
    """A start the limits refused: which limit, and how long to wait before trying again."""

    limit: str  # "concurrency", "rate_limit", or "unavailable" (the state did not answer)
    delay: float


class Lease:
    """An admitted start: the concurrency slot it holds (if the task has a concurrency
    limit), renewed by this process's renewer until :meth:`release`."""

    __slots__ = ("holder", "name", "state")

    def __init__(self, state: TaskState | None, name: str, holder: str) -> None:
        self.state = state
        self.name = name
        self.holder = holder

    def release(self) -> None:
        """Give the slot back (logged, never raised: the lease expires anyway)."""
        state = self.state
        if state is None:
            return
        _renewer.forget(self)
        try:
            state.release_slot(self.name, self.holder)
        except Exception:
            logger.exception("could not release the concurrency slot of task %s", self.name)

    async def arelease(self) -> None:
        """:meth:`release` with the state's async client."""
        state = self.state
        if state is None:
            return
        _renewer.forget(self)
        try:
            await state.arelease_slot(self.name, self.holder)
        except Exception:
            logger.exception("could not release the concurrency slot of task %s", self.name)


def _request(
    env: TaskEnvelope, spec: TaskSpec, backend: BackgroundBackend
) -> tuple[FlowLimits, str, float]:
    flow = spec.flow
    assert flow is not None
    return flow, f"{env.task_id}:{env.attempt}:{new_task_id()}", backend.concurrency_lease


def _outcome(
    answer: tuple[str, float] | None,
    env: TaskEnvelope,
    flow: FlowLimits,
    holder: str,
    state: TaskState,
    lease: float,
) -> Lease | Held:
    if answer is not None:
        return Held(answer[0], defer_delay(answer[1], env))
    if flow.concurrency is None:
        return Lease(None, env.task_name, holder)
    granted = Lease(state, env.task_name, holder)
    _renewer.hold(granted, lease)
    return granted


def admit(env: TaskEnvelope, spec: TaskSpec, backend: BackgroundBackend) -> Lease | Held:
    """Take a start of ``env`` under its task's limits: a :class:`Lease` to release when
    the run ends, or :class:`Held` (run it later)."""
    flow, holder, lease = _request(env, spec, backend)
    state = backend.state
    try:
        answer = state.admit(env.task_name, holder, flow.concurrency, flow.rate, lease)
    except Exception:
        return _unavailable(env)
    return _outcome(answer, env, flow, holder, state, lease)


async def aadmit(env: TaskEnvelope, spec: TaskSpec, backend: BackgroundBackend) -> Lease | Held:
    """:func:`admit` with the state's async client (event-loop workers)."""
    flow, holder, lease = _request(env, spec, backend)
    state = backend.state
    try:
        answer = await state.aadmit(env.task_name, holder, flow.concurrency, flow.rate, lease)
    except Exception:
        return _unavailable(env)
    return _outcome(answer, env, flow, holder, state, lease)


def _unavailable(env: TaskEnvelope) -> Held:
    """The state could not decide (Redis down, a state that keeps no limits): the start
    waits and is tried again, never run unlimited and never lost."""
    logger.exception(
        "could not check the limits of task %s %s; it is deferred", env.task_name, env.task_id
    )
    return Held("unavailable", defer_delay(1.0, env))


def defer_delay(hint: float, env: TaskEnvelope) -> float:
    """How long a refused start waits before it is tried again.

    At least ``hint`` (when the state knows the limit frees then: the oldest start leaving
    a rate window), plus a jittered wait that grows with the time the task has waited so
    far, up to :data:`MAX_DEFER`: a long backlog polls less often, and waiters spread out
    instead of all coming back at once.
    """
    waited = max(0.0, time.time() - env.enqueued_at)
    spread = min(MAX_DEFER, 0.05 + 0.25 * waited)
    return max(0.0, hint) + random.uniform(spread / 2, spread)


# -- renewing leases -------------------------------------------------------------------------
class _Renewer:
    """One daemon thread per process renewing the concurrency leases its tasks hold.

    It wakes every third of the shortest lease held, and renews each state's leases in
    one call. Nothing runs while no lease is held; a forked child starts its own thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._held: dict[Lease, float] = {}
        self._thread: threading.Thread | None = None
        self._pid = 0

    def hold(self, lease: Lease, seconds: float) -> None:
        with self._lock:
            self._held[lease] = seconds
            thread = self._thread
            if thread is None or not thread.is_alive() or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name="pacificpy-lease-renewer", daemon=True
                )
                self._thread.start()

    def forget(self, lease: Lease) -> None:
        with self._lock:
            self._held.pop(lease, None)

    def clear(self) -> None:
        with self._lock:
            self._held.clear()
            self._wake.notify_all()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._held:
                    self._thread = None
                    return
                interval = min(self._held.values()) / 3
                self._wake.wait(interval)
                by_state: dict[int, tuple[TaskState, float, list[tuple[str, str]]]] = {}
                for lease, seconds in self._held.items():
                    assert lease.state is not None
                    entry = by_state.setdefault(id(lease.state), (lease.state, seconds, []))
                    entry[2].append((lease.name, lease.holder))
            for state, seconds, held in by_state.values():
                try:
                    state.renew_slots(held, seconds)
                except Exception:
                    logger.exception("could not renew %d concurrency leases", len(held))


_renewer = _Renewer()


@config.resets(__name__, "_renewer")
def _forget_leases() -> None:
    """Stop renewing every lease (they expire by themselves)."""
    _renewer.clear()
