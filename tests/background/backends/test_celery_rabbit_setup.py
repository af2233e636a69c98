"""Celery on RabbitMQ: a setup with nowhere to keep state is refused before any task is
accepted (issue 15's exact misconfiguration), and a worker that cannot record a task's end
never acknowledges the message."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from celery import Celery

from pacificpy.background import _codec
from pacificpy.background.backend import CeleryBackgroundBackend
from pacificpy.background.config import get_backend
from pacificpy.background.decorators import configure_background_tasks
from pacificpy.background.task import Message, TaskEnvelope, new_task_id
from pacificpy.errors import ConfigurationError
from tests.conformance import tasks
from tests.conformance.harness import SIGNING_KEY
from tests.conformance.harness_celery import ROOT, CeleryWorker
from tests.support.rabbitmq import RabbitVhost
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.timeout(180)

#: The broker of the issue, verbatim.
ISSUE_BROKER = "amqp://guest:guest@127.0.0.1:5672//"


def _message() -> Message:
    env = TaskEnvelope(task_id=new_task_id(), task_name=tasks.add.name, args=(1, 2))
    return Message(env, _codec.encode(env))


def test_issue_misconfiguration_refused_when_configured() -> None:
    backend = CeleryBackgroundBackend(celery_app=Celery("app", broker=ISSUE_BROKER))
    with pytest.raises(ConfigurationError) as info:
        configure_background_tasks(backend)
    text = str(info.value)
    assert "is not Redis" in text
    assert "redis_url=" in text and "state=" in text
    assert "guest:guest" not in text  # the password is never shown
    assert get_backend() is not backend  # refused before it was installed


def test_issue_misconfiguration_refused_at_app_startup() -> None:
    backend = CeleryBackgroundBackend(celery_app=Celery("app", broker=ISSUE_BROKER))
    with pytest.raises(ConfigurationError, match="is not Redis"):
        asyncio.run(backend.startup())


def test_issue_misconfiguration_refused_at_first_enqueue(rabbit: RabbitVhost) -> None:
    backend = CeleryBackgroundBackend(celery_app=Celery("app", broker=rabbit.url()))
    with pytest.raises(ConfigurationError, match="is not Redis"):
        backend.enqueue_sync(_message())
    with pytest.raises(ConfigurationError, match="is not Redis"):
        asyncio.run(backend.enqueue(_message()))
    # Nothing reached the broker: a backend that can read the queue finds it empty.
    reader = CeleryBackgroundBackend(Celery("reader", broker=rabbit.url()), redis_url="redis://x")
    assert reader.queue_length_sync("default") == 0
    backend.shutdown_sync()
    reader.shutdown_sync()


def test_issue_misconfiguration_worker_refuses_to_start(rabbit: RabbitVhost) -> None:
    env_broker = {"PACIFICPY_TEST_BROKER": rabbit.url()}
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.background.backends._rabbit_misconfigured",
         "worker", "--pool", "solo", "--without-gossip", "--without-mingle"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={**_env(), **env_broker},
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "ConfigurationError" in out and "is not Redis" in out, out
    assert " ready." not in out  # it never consumed a message


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def test_unsettleable_message_goes_back_not_acked(
    rabbit: RabbitVhost, own_redis: RedisServer
) -> None:
    """The state store (Redis) is down while a task ends: the worker cannot record the end,
    so it gives the message back; once the state is back the task runs and its result is
    stored. Acknowledging it would have lost it."""
    celery_app = Celery("unsettled", broker=rabbit.url())
    backend = CeleryBackgroundBackend(celery_app, redis_url=own_redis.url)
    configure_background_tasks(backend, signing_key=SIGNING_KEY)
    with CeleryWorker(own_redis.url, concurrency=1, broker_url=rabbit.url()) as worker:
        worker.wait_ready()
        own_redis.stop()
        handle = tasks.add.delay(2, 3)  # no idempotency key: the enqueue needs no state
        marker = "goes back to the queue"
        worker.wait_for_log(marker, timeout=60)
        first = worker.log().index(marker)
        worker.wait_for_log(marker, timeout=60, start=first + len(marker))  # again: requeued
        own_redis.start()
        assert handle.result_sync(timeout=90) == 5
    backend.shutdown_sync()
