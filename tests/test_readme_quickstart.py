"""The README's quick start, followed literally: its app served by a real uvicorn process,
its ``curl`` lines run as written (only the address and the task id swapped), and what they
print compared with what the README says they print."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.uvicorn_server import REPO_ROOT, serve_app

README = REPO_ROOT / "README.md"
README_ADDRESS = "http://127.0.0.1:8000"
DEADLINE = 30.0


def quick_start() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^## Quick start\n(.*?)^## ", text, re.S | re.M)
    assert match, "README.md has no '## Quick start' section"
    return match.group(1)


def fenced(section: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", section, re.S | re.M)


def curl_steps(section: str) -> list[tuple[str, str]]:
    """Each ``curl`` line of the section's shell block, with the ``# output`` line under it."""
    (block,) = [b for b in fenced(section, "sh") if "\ncurl " in "\n" + b]
    lines = [line for line in block.splitlines() if line.strip()]
    steps = []
    for i, line in enumerate(lines):
        if line.startswith("curl "):
            shown = lines[i + 1]
            assert shown.startswith("# "), f"no output shown under {line!r}"
            steps.append((line, shown[2:]))
    return steps


def run_curl(line: str) -> str:
    """Run a curl line: with curl itself when installed, else the same request with httpx."""
    if shutil.which("curl"):
        proc = subprocess.run(
            ["bash", "-c", line], capture_output=True, text=True, timeout=30, check=True
        )
        return proc.stdout
    args = shlex.split(line)[1:]
    method, headers, body, url = "GET", {}, None, ""
    while args:
        arg = args.pop(0)
        if arg == "-X":
            method = args.pop(0)
        elif arg == "-H":
            name, _, value = args.pop(0).partition(":")
            headers[name.strip()] = value.strip()
        elif arg == "-d":
            body, method = args.pop(0), "POST" if method == "GET" else method
        elif not arg.startswith("-"):
            url = arg
    return httpx.request(method, url, headers=headers, content=body, timeout=30).text


def test_the_quick_start_as_written(tmp_path: Path) -> None:
    section = quick_start()
    # The app is the block that makes one (later blocks swap its backend).
    (app_code,) = [b for b in fenced(section, "python") if "app = PacificPy()" in b]
    assert "Save this as `myapp.py`" in section
    (tmp_path / "myapp.py").write_text(app_code, encoding="utf-8")
    (post_line, post_shown), (status_line, status_shown) = curl_steps(section)
    assert post_line.startswith(f"curl -s -X POST {README_ADDRESS}/users ")
    shown_id = re.fullmatch(r'\{"task_id":"([0-9a-f]{32})"\}', post_shown)
    assert shown_id, post_shown
    readme_id = shown_id.group(1)
    assert readme_id in status_line

    with serve_app("myapp:app", extra_args=["--app-dir", str(tmp_path)]) as (base, _):
        posted = run_curl(post_line.replace(README_ADDRESS, base))
        real = re.fullmatch(r'\{"task_id":"([0-9a-f]{32})"\}', posted)
        assert real, f"the README shows {post_shown}, the app answered {posted}"
        task_id = real.group(1)

        line = status_line.replace(README_ADDRESS, base).replace(readme_id, task_id)
        expected = status_shown.replace(readme_id, task_id)
        deadline = time.monotonic() + DEADLINE
        seen = run_curl(line)
        while seen != expected:
            # Before it completes, the route answers its status alone.
            assert seen in ('{"status":"queued"}', '{"status":"running"}'), seen
            assert time.monotonic() < deadline, f"the README shows {expected}, still {seen}"
            time.sleep(0.05)
            seen = run_curl(line)

        unknown = httpx.get(f"{base}/status/{'0' * 32}", timeout=30)
        assert unknown.status_code == 404 and unknown.json() == {"error": "no such task"}
