"""``examples/progress.py`` in a real headless Chromium, served by a real uvicorn: the form
starts a task and the bar follows the task's event stream (Server-Sent Events) to 100%;
the Cancel button stops a running one and the stream ends ``cancelled``.

With PACIFICPY_UPDATE_SCREENSHOT=1 it saves the picture docs/tasks.md shows
(docs/images/progress.png).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.test_dashboard_browser import CHROMIUM_ARGS, chromium_path, record_requests
from tests.support.uvicorn_server import REPO_ROOT, serve_app

pytestmark = pytest.mark.browser

SCREENSHOT = REPO_ROOT / "docs" / "images" / "progress.png"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve_app("examples.progress:app", env={"REPORT_STEP_SECONDS": "0.1"}) as (url, _):
        yield url


def event_streams(requests: list[Any]) -> list[Any]:
    return [r for r in requests if "/_tasks/events/" in r.url]


def test_the_bar_reaches_100_from_the_event_stream(server: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    executable = chromium_path()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 720, "height": 320})
            requests = record_requests(page)
            page.goto(server + "/")
            page.fill("#steps", "12")
            page.click("#start button[type=submit]")
            bar = page.locator("#bar")
            # Part way first (the bar moves while the task runs), then full and completed.
            expect(bar).to_have_attribute("data-status", "running", timeout=15_000)
            expect(bar).to_have_attribute("data-progress", "100", timeout=30_000)
            expect(bar).to_have_attribute("data-status", "completed", timeout=15_000)
            expect(page.locator("#text")).to_contain_text("section 12 of 12")
            width = page.evaluate("document.getElementById('fill').style.width")
            assert width == "100%"
            (stream,) = event_streams(requests)  # one stream, no polling
            assert "signature=" in stream.url and "expires=" in stream.url
            shot = page.screenshot(full_page=True)
            assert shot.startswith(b"\x89PNG")
            if os.environ.get("PACIFICPY_UPDATE_SCREENSHOT"):
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                SCREENSHOT.write_bytes(shot)
        finally:
            browser.close()


def test_cancel_from_the_page_ends_the_stream_cancelled(server: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    executable = chromium_path()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(server + "/")
            page.fill("#steps", "200")
            page.click("#start button[type=submit]")
            bar = page.locator("#bar")
            expect(bar).to_have_attribute("data-status", "running", timeout=15_000)
            page.click("#cancel")
            expect(bar).to_have_attribute("data-status", "cancelled", timeout=15_000)
            expect(page.locator("#cancel")).to_be_disabled()
            assert int(bar.get_attribute("data-progress") or "100") < 100
        finally:
            browser.close()
