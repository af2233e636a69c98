"""``.delay()`` is typed with ParamSpec: mypy flags a wrong call, passes a right one."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

HEADER = """
from pacificpy.background.decorators import background
from pacificpy.background.task import TaskHandle


@background
def send_email(to: str, subject: str, body: str) -> bool:
    return True


@background(retries=2)
async def fetch(url: str, *, timeout: float = 1.0) -> bytes:
    return b""
"""

GOOD = """
async def handler() -> None:
    handle: TaskHandle[bool] = await send_email.delay("a@x.org", "Hi", "Body")
    sent: bool = await handle.result()
    data: bytes = await fetch.delay("https://x.org", timeout=2.0).result()
    fetch.apply_async(("https://x.org",), countdown=3)
    assert sent and data is not None
"""

BAD = """
send_email.delay(1, 2, 3, 4)
fetch.delay("https://x.org", retries=3)
wrong: TaskHandle[str] = send_email.delay("a", "b", "c")
"""


def test_mypy_checks_delay_against_the_signature(tmp_path: Path) -> None:
    good = tmp_path / "good.py"
    bad = tmp_path / "bad.py"
    good.write_text(textwrap.dedent(HEADER + GOOD))
    bad.write_text(textwrap.dedent(HEADER + BAD))
    proc = subprocess.run(
        [
            sys.executable, "-m", "mypy",
            "--no-incremental", "--config-file", "/dev/null",
            "--strict", "--show-error-codes", "--no-error-summary",
            good.name, bad.name,
        ],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=tmp_path,
    )  # fmt: skip
    lines = proc.stdout.splitlines()
    assert not [line for line in lines if line.startswith(good.name)], proc.stdout
    bad_lines = [line for line in lines if line.startswith(bad.name)]
    text = "\n".join(bad_lines)
    assert 'Argument 1 to "delay" of "BackgroundTask" has incompatible type "int"' in text, text
    assert "Too many arguments" in text, text
    assert 'Unexpected keyword argument "retries"' in text, text
    assert "TaskHandle[bool]" in text and "TaskHandle[str]" in text, text
