"""Dead letters carry their timestamps (SPEC §3.5): when the task was enqueued, when it failed.

Checked on the local executor (in-memory store) and on ARQ (the Redis store, through a
real in-process ARQ worker), so the timestamps survive the trip through Redis too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from arq.connections import RedisSettings
from arq.worker import create_worker

from pacificpy.background.backends.arq_backend import ARQBackgroundBackend
from pacificpy.background.dead_letter import DeadLetter
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import get_local_executor
from pacificpy.errors import TaskFailed
from tests.support.redis_server import RedisServer

DB = 9
WAIT = 30.0


@background(retries=1, retry_backoff=0.01, retry_jitter=False)
def always_fails(n: int) -> None:
    raise RuntimeError(f"boom {n}")


def _check_timestamps(letter: DeadLetter, before: float, after: float) -> None:
    assert letter.task_name == always_fails.name
    assert letter.attempts == 2
    assert isinstance(letter.enqueued_at, float)
    assert isinstance(letter.failed_at, float)
    # Wall-clock seconds of this run, in order: enqueued, then (after a retry) failed.
    assert before <= letter.enqueued_at <= after, (before, letter.enqueued_at, after)
    assert letter.enqueued_at < letter.failed_at <= after, (letter.enqueued_at, letter.failed_at)


def test_local_dead_letter_has_enqueue_and_failure_times() -> None:
    executor = get_local_executor(max_workers=2)
    configure_background_tasks(executor)
    try:
        before = time.time()
        handle = always_fails.delay(1)
        with pytest.raises(TaskFailed, match="boom 1"):
            handle.result_sync(timeout=WAIT)
        after = time.time()
        (letter,) = executor.dead_letters_sync()
        assert letter.task_id == handle.id
        _check_timestamps(letter, before, after)
    finally:
        executor.shutdown_sync(timeout=5)


@pytest.fixture
def arq_backend(redis_server: RedisServer) -> Iterator[ARQBackgroundBackend]:
    url = redis_server.fresh_db_url(DB)
    backend = ARQBackgroundBackend(redis_settings=RedisSettings.from_dsn(url), shutdown_timeout=1)
    configure_background_tasks(backend, signing_key=b"dead-letter-timestamps-key-0123456")
    yield backend
    backend.shutdown_sync()


@pytest.mark.redis
@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")
async def test_arq_dead_letter_has_enqueue_and_failure_times(
    arq_backend: ARQBackgroundBackend,
) -> None:
    before = time.time()
    handle = await always_fails.delay(2)
    worker = create_worker(arq_backend.worker_settings(), burst=True, handle_signals=False)
    try:
        await worker.async_run()  # runs the first attempt and, once due, the retry
    finally:
        await worker.close()
    with pytest.raises(TaskFailed, match="boom 2"):
        await handle.result(timeout=WAIT)
    after = time.time()
    (letter,) = await arq_backend.dead_letters()
    assert letter.task_id == handle.id
    _check_timestamps(letter, before, after)
