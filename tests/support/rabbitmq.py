"""The machine's RabbitMQ for tests: one virtual host per test run.

Tests never share the machine's RabbitMQ namespace: each :class:`RabbitVhost` creates a
virtual host of its own (``pacificpy-test-<random>``) with ``rabbitmqctl``, so queues,
delay queues and exchanges of one run never see another's, and deletes it (with every
queue in it) at teardown.

Where RabbitMQ listens: ``PACIFICPY_TEST_RABBITMQ`` (``host:port``, default
``127.0.0.1:5672``), user ``guest``/``guest``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from urllib.parse import quote

import pytest

from tests.support.net import port_is_open

__all__ = ["RabbitVhost", "rabbitmq_address", "require_rabbitmq"]


def rabbitmq_address() -> tuple[str, int]:
    """``(host, port)`` of the RabbitMQ the tests use."""
    host, _, port = os.environ.get("PACIFICPY_TEST_RABBITMQ", "127.0.0.1:5672").rpartition(":")
    return host or "127.0.0.1", int(port)


def require_rabbitmq() -> None:
    """Skip (fail under ``CI``) unless RabbitMQ answers and ``rabbitmqctl`` is installed."""
    host, port = rabbitmq_address()
    missing = None
    if shutil.which("rabbitmqctl") is None:
        missing = "rabbitmqctl is not installed"
    elif not port_is_open(port, host):
        missing = f"nothing listens on {host}:{port} (RabbitMQ)"
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)


def _ctl(*args: str) -> None:
    subprocess.run(
        ["rabbitmqctl", *args],
        check=True,
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


class RabbitVhost:
    """A virtual host of this run's own on the machine's RabbitMQ, for ``guest``.

    Args:
        host: RabbitMQ's address (:func:`rabbitmq_address` by default).
        port: its AMQP port.
    """

    def __init__(self, host: str | None = None, port: int | None = None) -> None:
        default_host, default_port = rabbitmq_address()
        self.host = host or default_host
        self.port = port or default_port
        self.name = f"pacificpy-test-{uuid.uuid4().hex[:12]}"
        self.created = False

    def url(self, port: int | None = None) -> str:
        """The broker URL of this vhost (through ``port`` instead, e.g. a proxy's)."""
        return f"amqp://guest:guest@{self.host}:{port or self.port}/{quote(self.name, safe='')}"

    def create(self) -> RabbitVhost:
        _ctl("add_vhost", self.name)
        self.created = True
        _ctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        return self

    def close_connections(self) -> None:
        """Have RabbitMQ close every client connection of this vhost (and wait until none
        is running: a closed one stays listed until its client reads the close)."""
        _ctl("close_all_connections", "--vhost", self.name, "closed by a test")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["rabbitmqctl", "list_connections", "-q", "vhost", "state"],
                check=True, capture_output=True, text=True, timeout=60,
                stdin=subprocess.DEVNULL,
            ).stdout  # fmt: skip
            rows = [line.split() for line in out.splitlines()]
            if not any(row[:2] == [self.name, "running"] for row in rows):
                return
            time.sleep(0.1)
        raise TimeoutError(f"RabbitMQ still has running connections on vhost {self.name}")

    def delete(self) -> None:
        """Delete the vhost and everything in it."""
        if self.created:
            _ctl("delete_vhost", self.name)
            self.created = False

    def __enter__(self) -> RabbitVhost:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.delete()
