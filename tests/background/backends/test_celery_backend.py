"""CeleryBackgroundBackend: configuration, producing, the guide's snippet with the stock
``celery`` command, and ``pacificpy worker myapp`` (``run_worker``)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
from celery import Celery
from starlette.exceptions import StarletteDeprecationWarning

from pacificpy.background import EnqueueError, TaskStatus
from pacificpy.background.backend import CeleryBackgroundBackend
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.errors import ConfigurationError
from tests.conformance import tasks
from tests.conformance.harness import SIGNING_KEY
from tests.conformance.harness_celery import ROOT, CeleryWorker

pytestmark = pytest.mark.timeout(120)

with warnings.catch_warnings():
    # Starlette 1.x warns when its TestClient runs on httpx instead of httpx2.
    warnings.filterwarnings(
        "ignore", message="Using `httpx` with", category=StarletteDeprecationWarning
    )
    from starlette.testclient import TestClient

GUIDE_APP = ROOT / "tests" / "apps" / "celery_guide_app.py"


def test_at_least_once_defaults_unless_user_set(redis_url: str) -> None:
    plain = Celery("a", broker=redis_url)
    CeleryBackgroundBackend(celery_app=plain).shutdown_sync()
    assert plain.conf.task_acks_late is True
    assert plain.conf.task_reject_on_worker_lost is True
    assert plain.conf.worker_prefetch_multiplier == 1

    class Config:
        task_acks_late = False
        worker_prefetch_multiplier = 8

    custom = Celery("b", broker=redis_url)
    custom.config_from_object(Config)
    custom.conf.update(task_reject_on_worker_lost=False)
    CeleryBackgroundBackend(celery_app=custom).shutdown_sync()
    assert custom.conf.task_acks_late is False
    assert custom.conf.worker_prefetch_multiplier == 8
    assert custom.conf.task_reject_on_worker_lost is False

    configured = Celery("c", broker=redis_url)
    configured.conf.worker_prefetch_multiplier = 3
    assert configured.conf.task_acks_late is False  # loads the configuration now
    CeleryBackgroundBackend(celery_app=configured).shutdown_sync()
    assert configured.conf.task_acks_late is True
    assert configured.conf.worker_prefetch_multiplier == 3


def test_rejects_non_celery_app() -> None:
    with pytest.raises(ConfigurationError):
        CeleryBackgroundBackend(celery_app=object())  # type: ignore[arg-type]


def test_non_redis_broker_needs_redis_url() -> None:
    backend = CeleryBackgroundBackend(celery_app=Celery("x", broker="amqp://127.0.0.1:1//"))
    with pytest.raises(ConfigurationError, match="redis_url"):
        backend.state  # noqa: B018
    backend.shutdown_sync()


def test_tasks_registered_with_celery_under_their_names(redis_url: str) -> None:
    app = Celery("reg", broker=redis_url)
    backend = CeleryBackgroundBackend(celery_app=app)
    try:
        task = app.tasks[tasks.add.name]
        assert task.name == tasks.add.name
        assert app.tasks[tasks.slow_sync.name].soft_time_limit == 0.5
        assert app.tasks[tasks.slow_sync.name].time_limit == 0.5 + backend.time_limit_grace
        assert app.tasks[tasks.add.name].ignore_result is True
    finally:
        backend.shutdown_sync()


def test_async_task_soft_limit_does_not_race_its_own_cancellation(redis_url: str) -> None:
    """An async task is cancelled at its timeout on its loop; Celery's soft limit backs it up.

    Its name is no Python identifier, as task names may be: Celery must still register it.
    """

    @background(name="soft-limit-async", timeout=0.5)
    async def slow_async() -> None:
        pass

    app = Celery("soft", broker=redis_url)
    backend = CeleryBackgroundBackend(celery_app=app)
    try:
        task = app.tasks["soft-limit-async"]
        assert task.soft_time_limit == 0.5 + backend.time_limit_grace / 2
        assert task.time_limit == 0.5 + backend.time_limit_grace
    finally:
        backend.shutdown_sync()


def test_message_frame_is_celery_protocol_2(redis_url: str) -> None:
    app = Celery("frame", broker=redis_url)
    backend = CeleryBackgroundBackend(celery_app=app)
    configure_background_tasks(backend, signing_key=SIGNING_KEY)
    queue = f"frame-{os.getpid()}-{time.monotonic_ns()}"
    try:
        handle = tasks.add.apply_async(args=(1, 2), queue=queue, countdown=5)
        # priority 0 goes on the list of kombu priority 9 (kombu serves 0 first)
        raw = redis.Redis.from_url(redis_url).rpop(queue + backend._broker().priority_lists[0])
        assert raw is not None
        frame = orjson.loads(raw)
        headers = frame["headers"]
        assert headers["task"] == tasks.add.name
        assert headers["id"] == handle.id
        assert headers["eta"] is not None
        assert frame["properties"]["delivery_info"] == {"exchange": "", "routing_key": queue}
        # kombu decodes it exactly as Celery's worker will.
        with app.connection_for_read() as conn:
            message = conn.default_channel.message_to_python(frame)
            args, kwargs, _embed = message.decode()
        assert len(args) == 1 and args[0].startswith("pp1.")
        assert kwargs == {}
    finally:
        backend.shutdown_sync()


async def test_queue_length_counts_waiting_messages(redis_url: str) -> None:
    backend = CeleryBackgroundBackend(celery_app=Celery("ql", broker=redis_url))
    configure_background_tasks(backend, signing_key=SIGNING_KEY)
    queue = f"ql-{os.getpid()}-{time.monotonic_ns()}"
    try:
        assert await backend.queue_length(queue) == 0
        await tasks.add.apply_async(args=(1, 1), queue=queue)
        # From a thread with no loop: the blocking path.
        await asyncio.to_thread(tasks.add.apply_async, args=(2, 2), queue=queue)
        assert backend.queue_length_sync(queue) == 2
    finally:
        redis.Redis.from_url(redis_url).delete(queue)
        await backend.shutdown()


def test_enqueue_error_at_once_without_loop() -> None:
    backend = CeleryBackgroundBackend(celery_app=Celery("down", broker="redis://127.0.0.1:1/0"))
    configure_background_tasks(backend)
    with pytest.raises(EnqueueError) as info:
        tasks.add.delay(1, 2)
    assert info.value.task_name == tasks.add.name
    assert "broker" in str(info.value)
    backend.shutdown_sync()


@pytest.fixture(scope="module")
def _guide_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One file for the module: importing "myapp" from two paths would declare its task twice.
    workdir = tmp_path_factory.mktemp("guide")
    shutil.copy(GUIDE_APP, workdir / "myapp.py")
    return workdir


@pytest.fixture
def guide_broker(redis_url: str) -> str:
    """A Redis database of the guide tests alone: the conformance suite's Celery worker,
    alive for the whole session, consumes queue ``default`` of database 0 on this same
    server and would take (and, unsigned, dead-letter) the guide app's messages."""
    url = redis_url.rpartition("/")[0] + "/7"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def guide_app(
    _guide_dir: Path, guide_broker: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    monkeypatch.setenv("PACIFICPY_GUIDE_BROKER", guide_broker)
    monkeypatch.syspath_prepend(str(_guide_dir))
    yield _guide_dir
    sys.modules.pop("myapp", None)


def _wait_key(client: redis.Redis, key: str, timeout: float = 60.0) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = client.get(key)
        if value is not None:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{key} was never written")


def test_guide_snippet_with_stock_celery_command(guide_app: Path, guide_broker: str) -> None:
    """``celery -A myapp worker --concurrency=10`` as the guide writes it, although myapp
    also holds ``app = PacificPy()``; the app's handler enqueues with ``await .delay()``."""
    celery_bin = Path(sys.executable).parent / "celery"
    command = [str(celery_bin), "-A", "myapp", "worker", "--concurrency=10"]
    worker = CeleryWorker(guide_broker, command=command, cwd=guide_app)
    worker.env["PACIFICPY_GUIDE_BROKER"] = guide_broker
    with worker:
        # The guide's command logs at WARNING (no "ready." line): the banner is enough,
        # a message sent before the consumer starts waits in the queue.
        worker.wait_for_log("[queues]")
        import myapp  # type: ignore[import-not-found]

        with TestClient(myapp.app) as client:
            response = client.post(
                "/notifications", json={"to": "ann@example.com", "subject": "Hi", "body": "B"}
            )
        assert response.status_code == 200
        assert response.json() == {"status": "Email queued"}
        value = _wait_key(redis.Redis.from_url(guide_broker), "guide-outbox:ann@example.com")
        assert value == b"Hi|B"


def test_pacificpy_worker_command_serves_tasks(guide_app: Path, guide_broker: str) -> None:
    """``pacificpy worker myapp`` (the real CLI) starts the Celery worker of the app's
    backend, which runs its tasks and exits 0 on SIGTERM."""
    pacificpy_bin = Path(sys.executable).parent / "pacificpy"
    command = [str(pacificpy_bin), "worker", "myapp", "--workers", "1"]
    worker = CeleryWorker(guide_broker, command=command, cwd=guide_app)
    worker.env["PACIFICPY_GUIDE_BROKER"] = guide_broker
    with worker:
        worker.wait_ready()
        assert "concurrency: 1 (prefork)" in worker.log()
        import myapp

        configure_background_tasks(myapp.celery_backend)
        handle = myapp.send_email.delay("bob@example.com", "S", "T")
        handle.result_sync(timeout=60)
        assert handle.status_sync() is TaskStatus.COMPLETED
        outbox = redis.Redis.from_url(guide_broker)
        assert _wait_key(outbox, "guide-outbox:bob@example.com") == b"S|T"
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0


def test_celery_cli_still_finds_a_plain_celery_module(tmp_path: Path, redis_url: str) -> None:
    """The CLI trick only answers for a module whose ``app`` is not a Celery app."""
    (tmp_path / "plainapp.py").write_text(
        "import os\nfrom celery import Celery\n"
        "from pacificpy.background.backend import CeleryBackgroundBackend\n"
        "from pacificpy.background.decorators import configure_background_tasks\n"
        "app = Celery('plain', broker=os.environ['PACIFICPY_GUIDE_BROKER'])\n"
        "configure_background_tasks(CeleryBackgroundBackend(celery_app=app))\n"
    )
    env = dict(os.environ, PACIFICPY_GUIDE_BROKER=redis_url)
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "plainapp", "inspect", "--help"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
