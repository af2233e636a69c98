"""``app.run()`` and ``make run`` take their port from ``PORT`` (the guide's example as written)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from pacificpy.app import default_port
from tests.support.net import free_port, wait_for_port

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_default_port_reads_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORT", raising=False)
    assert default_port() == 8000
    monkeypatch.setenv("PORT", "9123")
    assert default_port() == 9123
    monkeypatch.setenv("PORT", "eighty")
    with pytest.raises(ValueError, match="PORT='eighty'"):
        default_port()


def test_example_app_serves_on_the_port_given_by_port() -> None:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "examples/app.py"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=60)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/users",
            data=json.dumps({"name": "Ada", "email": "ada@example.com"}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read()) == {"user_id": 1, "message": "User created"}
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output.decode(errors="replace")
