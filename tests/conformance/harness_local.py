"""The local executor in the conformance suite: the workers are this process's threads."""

from __future__ import annotations

from collections.abc import Iterator

from pacificpy.background.backend import BackgroundBackend
from pacificpy.background.local import LocalExecutor, get_local_executor
from tests.conformance.harness import Harness
from tests.support.redis_server import RedisServer


def _inject(backend: BackgroundBackend, data: bytes, queue: str) -> None:
    assert isinstance(backend, LocalExecutor)
    backend.submit_raw(data, queue=queue)


def make_harness(redis_server: RedisServer) -> Iterator[Harness]:
    yield Harness(
        name="local",
        make_backend=lambda: get_local_executor(4),
        inject_raw=_inject,
        skips={
            "queue_length_unconsumed": "the local executor runs every queue on its one pool, "
            "so no queue stays unconsumed; tests/background/test_local.py covers its count",
            "a_fresh_backend_instance_reads_the_task": "the local executor keeps outcomes in "
            "its own process: a later request reads them through the configured executor "
            "(test_get_handle_reads_status_and_result)",
            "get_handle_in_another_process": "the local executor runs tasks inside the app "
            "process, so no other process runs or sees them",
            "terminate_kills_the_process_running_it": "the local executor runs tasks on threads "
            "and its loop, which cannot be killed; the cancel reaches the run "
            "(test_a_running_sync_task_sees_cancelled)",
        },
    )
