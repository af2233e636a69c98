"""The local executor in the conformance suite: the workers are this process's threads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pacificpy.background.backend import BackgroundBackend
from pacificpy.background.config import configured_backend
from pacificpy.background.decorators import configure_background_tasks
from pacificpy.background.local import LocalExecutor, get_local_executor
from tests.conformance.harness import FLOW_LEASE, SIGNING_KEY, Harness
from tests.support.redis_server import RedisServer


def _inject(backend: BackgroundBackend, data: bytes, queue: str) -> None:
    assert isinstance(backend, LocalExecutor)
    backend.submit_raw(data, queue=queue)


class _Executor:
    def kill(self) -> None:
        raise NotImplementedError("the local executor's workers are the test process")


@contextmanager
def _workers(queue: str, slots: int, processes: int) -> Iterator[_Executor]:
    """``Harness.workers``: a fresh executor with ``slots`` threads, configured for the block
    (it runs every queue)."""
    before = configured_backend()
    executor = get_local_executor(slots)
    configure_background_tasks(executor, signing_key=SIGNING_KEY, concurrency_lease=FLOW_LEASE)
    try:
        yield _Executor()
    finally:
        executor.shutdown_sync(timeout=5)
        if before is not None:
            configure_background_tasks(before, signing_key=SIGNING_KEY)


def make_harness(redis_server: RedisServer) -> Iterator[Harness]:
    yield Harness(
        name="local",
        make_backend=lambda: get_local_executor(4),
        inject_raw=_inject,
        workers=_workers,
        skips={
            "queue_length_unconsumed": "the local executor runs every queue on its one pool, "
            "so no queue stays unconsumed; tests/background/test_local.py covers its count",
            "a_fresh_backend_instance_reads_the_task": "the local executor keeps outcomes in "
            "its own process: a later request reads them through the configured executor "
            "(test_get_handle_reads_status_and_result)",
            "get_handle_in_another_process": "the local executor runs tasks inside the app "
            "process, so no other process runs or sees them",
            "concurrency_slot_of_a_killed_worker_expires": "the local executor's workers are "
            "threads of the app process: none can be killed alone (tests/background/test_flow.py "
            "covers a lease that is not renewed expiring)",
            "terminate_kills_the_process_running_it": "the local executor runs tasks on threads "
            "and its loop, which cannot be killed; the cancel reaches the run "
            "(test_a_running_sync_task_sees_cancelled)",
        },
    )
