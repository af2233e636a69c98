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

from pacificpy.background.backend import BackgroundBackend

#: Every worker and test process of the suite signs its messages with this key.
SIGNING_KEY = b"conformance-suite-signing-key-0123456789"


@dataclasses.dataclass
class Harness:
    """A running backend for the conformance tests.

    Attributes:
        name: ``local``, ``celery`` or ``arq``.
        make_backend: builds the producer-side backend used in the test process.
        inject_raw: put raw bytes where a worker will receive them as a message (to test
            garbage, forged, pickled and unknown-task messages).
        skips: behaviour name -> why this backend does not run that test.
    """

    name: str
    make_backend: Callable[[], BackgroundBackend]
    inject_raw: Callable[[BackgroundBackend, bytes, str], None]
    skips: dict[str, str] = dataclasses.field(default_factory=dict)
    backend: BackgroundBackend | None = None
