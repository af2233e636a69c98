"""What a backend provides to the conformance suite.

Each backend has a module ``tests/conformance/harness_<name>.py`` with a generator
``make_harness(redis_server)`` that starts what the backend needs (worker processes for
Celery and ARQ), yields a :class:`Harness`, and tears everything down afterwards. The
harness lives for the whole session; the ``harness`` fixture configures its backend
before each test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol

from pacificpy.background.backend import BackgroundBackend

#: Every worker and test process of the suite signs its messages with this key.
SIGNING_KEY = b"conformance-suite-signing-key-0123456789"
#: ``concurrency_lease`` of the workers started by ``Harness.workers`` (seconds).
FLOW_LEASE = 5.0


class Workers(Protocol):
    """Workers started for one test by ``Harness.workers``."""

    def kill(self) -> None:
        """SIGKILL every process of these workers (no shutdown, no acknowledgement)."""


@dataclasses.dataclass
class Harness:
    """A running backend for the conformance tests.

    Attributes:
        name: ``local``, ``celery`` or ``arq``.
        make_backend: builds the producer-side backend used in the test process.
        inject_raw: put raw bytes where a worker will receive them as a message (to test
            garbage, forged, pickled and unknown-task messages).
        skips: behaviour name -> why this backend does not run that test.
        workers: ``workers(queue, slots, processes)`` starts workers that consume ``queue``
            with ``slots`` worker slots in all, spread over ``processes`` processes (the
            flow-control tests), and stops them when the block ends. Their concurrency
            leases last :data:`FLOW_LEASE`. The local executor's "workers" are a fresh
            executor with ``slots`` threads, configured as the backend for the block.
    """

    name: str
    make_backend: Callable[[], BackgroundBackend]
    inject_raw: Callable[[BackgroundBackend, bytes, str], None]
    skips: dict[str, str] = dataclasses.field(default_factory=dict)
    backend: BackgroundBackend | None = None
    workers: Callable[[str, int, int], AbstractContextManager[Workers]] | None = None
