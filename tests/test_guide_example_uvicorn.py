"""The guide's complete example (examples/app.py) served by a real uvicorn process.

``POST /users`` answers at once, while ``send_welcome_email`` (a 2 s task) runs
afterwards in the executor and then completes: its ``print`` appears in the server's
output about 2 s after the response.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.uvicorn_server import serve_app


def _output(pid: int) -> str:
    # serve_app sends the server's stdout to a temporary file; read it through /proc.
    return Path(f"/proc/{pid}/fd/1").read_bytes().decode(errors="replace")


def _post(url: str, payload: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        result: dict[str, object] = json.loads(response.read())
        return result


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads output via /proc")
def test_create_user_answers_at_once_then_email_is_sent() -> None:
    with serve_app(
        "app:app", env={"PYTHONUNBUFFERED": "1"}, extra_args=["--app-dir", "examples"]
    ) as (base, proc):
        started = time.monotonic()
        body = _post(base + "/users", {"name": "Ada", "email": "ada@example.com"})
        assert body == {"user_id": 1, "message": "User created"}
        # Ordering, not a stopwatch: the answer came before the 2 s task had finished.
        assert "Welcome email sent to user 1" not in _output(proc.pid)

        deadline = time.monotonic() + 20
        while "Welcome email sent to user 1" not in _output(proc.pid):
            assert time.monotonic() < deadline, _output(proc.pid)
            time.sleep(0.05)
        assert time.monotonic() - started >= 2.0  # it ran after the response, for 2 s
