"""The task dashboard in a real headless Chromium, served by a real uvicorn.

The page is served without the token and asks for it: typed into its form, or given as a
``#token=`` fragment (which the browser never sends). Every request the page makes is
recorded, to check the token travels only in the ``Authorization`` header.

Uses Debian's ``chromium`` (``make test`` installs it) through Playwright's ``executable_path``;
no browser is ever downloaded. With PACIFICPY_UPDATE_SCREENSHOT=1 it saves the screenshot
the README shows (docs/images/dashboard.png).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.apps.dashboard_app import TOKEN
from tests.support.uvicorn_server import REPO_ROOT, serve_app

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("PACIFICPY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = REPO_ROOT / "docs" / "images" / "dashboard.png"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def chromium_path() -> str:
    path = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; `make test` installs it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    env = {"PACIFICPY_DASHBOARD_SCHEDULE": "1"}
    with serve_app("tests.apps.dashboard_app:app", env) as (base_url, _proc):
        yield base_url


def wait_for_task(http: httpx.Client, task_id: str, status: str, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        resp = http.get(f"/_tasks/api/tasks/{task_id}", headers=AUTH)
        if resp.status_code == 200 and resp.json()["status"] == status:
            return resp.json()
        assert time.monotonic() < deadline, f"task {task_id} never reached {status}: {resp.text}"
        time.sleep(0.02)


def record_requests(page: Any) -> list[Any]:
    """Every request ``page`` makes from now on."""
    seen: list[Any] = []

    def record(request: Any) -> None:
        seen.append(request)

    page.on("request", record)
    return seen


def assert_token_only_in_headers(requests: list[Any]) -> None:
    """The token never in a URL; every API call carries it as a bearer token."""
    assert requests
    for request in requests:
        assert TOKEN not in request.url, request.url
        if "/_tasks/api/" in request.url:
            assert request.headers.get("authorization") == f"Bearer {TOKEN}", request.url


def test_dashboard_lists_tasks_and_requeues_a_dead_letter(server: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    executable = chromium_path()
    with httpx.Client(base_url=server, timeout=10) as http:
        ok_id = http.post("/welcome").json()["task_id"]
        bad_id = http.post("/charge").json()["task_id"]
        wait_for_task(http, ok_id, "completed")
        wait_for_task(http, bad_id, "failed")
        letters = http.get("/_tasks/api/dead-letters", headers=AUTH).json()["dead_letters"]
        assert [d["task_id"] for d in letters] == [bad_id]
        letter_id = letters[0]["id"]

        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=executable, args=CHROMIUM_ARGS, headless=True
            )
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                requests = record_requests(page)
                # The fragment stays in the browser: the server never sees it.
                page.goto(f"{server}/_tasks#token={TOKEN}")
                page.wait_for_selector("body[data-loaded='1']", timeout=15_000)
                assert "token=" not in page.url  # taken out of the address bar

                done = page.locator(f"#tasks tr[data-task-id='{ok_id}']")
                expect(done).to_have_attribute("data-status", "completed")
                expect(done).to_contain_text("send_welcome_email")
                failed = page.locator(f"#tasks tr[data-task-id='{bad_id}']")
                expect(failed).to_have_attribute("data-status", "failed")
                expect(page.locator("#failed")).to_contain_text("payment gateway unreachable")
                expect(page.locator("#failed")).not_to_contain_text("tok_live_SECRET")
                expect(page.locator("#cards [data-status='completed'] .n")).to_have_text("1")
                expect(page.locator("#queues")).to_contain_text("default")
                schedule = page.locator("#schedules tr[data-schedule$='.yearly_report']")
                expect(schedule).to_contain_text("0 3 1 1 *")
                expect(schedule).to_contain_text("Europe/Paris")
                # The app's local executor, in the worker registry.
                expect(page.locator("#workers tr[data-state='live']")).to_have_count(1)
                expect(page.locator("#workers")).to_contain_text("local")
                row = page.locator(f"#dead tr[data-letter-id='{letter_id}']")
                expect(row).to_contain_text("ConnectionError")

                # The README's picture is refreshed on request only, so a test run leaves
                # the work tree clean: PACIFICPY_UPDATE_SCREENSHOT=1 make test.
                shot = page.screenshot(full_page=True)
                assert shot.startswith(b"\x89PNG")
                if os.environ.get("PACIFICPY_UPDATE_SCREENSHOT"):
                    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                    SCREENSHOT.write_bytes(shot)

                # Fix the cause, then requeue from the page: the task runs again and completes.
                http.post("/heal")
                row.locator("button.requeue").click()
                expect(page.locator("#notice")).to_contain_text(bad_id)
                wait_for_task(http, bad_id, "completed")
                expect(page.locator(f"#dead tr[data-letter-id='{letter_id}']")).to_have_count(0)
                expect(page.locator(f"#tasks tr[data-task-id='{bad_id}']")).to_have_attribute(
                    "data-status", "completed", timeout=10_000
                )
                assert_token_only_in_headers(requests)
            finally:
                browser.close()
        assert http.get("/_tasks/api/dead-letters", headers=AUTH).json()["dead_letters"] == []


def test_page_asks_for_the_token(server: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    executable = chromium_path()
    with httpx.Client(base_url=server, timeout=10) as http:
        assert http.get("/_tasks").status_code == 200  # the page holds no data
        assert http.get("/_tasks/api/stats").status_code == 401
        assert http.get(f"/_tasks/api/stats?token={TOKEN}").status_code == 401
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            requests = record_requests(page)
            resp = page.goto(f"{server}/_tasks")
            assert resp is not None and resp.status == 200
            # No token yet: the API answers 401 and the page shows its form.
            expect(page.locator("#login")).to_be_visible()
            expect(page.locator("#app")).to_be_hidden()
            page.fill("#token", TOKEN)
            page.click("#login button")
            expect(page.locator("#app")).to_be_visible()
            page.wait_for_selector("body[data-loaded='1']", timeout=15_000)
            expect(page.locator("#updated")).to_contain_text("updated")
            expect(page.locator("#token")).to_have_value("")  # not left in the form

            # A wrong token (say, rotated on the server): the page asks for the right one.
            page.evaluate("sessionStorage.setItem('pacificpy-token', 'wrong')")
            page.select_option("#status-filter", "completed")
            expect(page.locator("#login")).to_be_visible()
            expect(page.locator("#login-msg")).to_have_text("Wrong token.")
            page.fill("#token", TOKEN)
            page.click("#login button")
            expect(page.locator("#app")).to_be_visible()
            expect(page.locator("#updated")).to_contain_text("updated")
            api_calls = [r for r in requests if "/_tasks/api/" in r.url]
            assert any(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in api_calls)
            assert all(TOKEN not in r.url for r in requests)
        finally:
            browser.close()


def test_a_token_in_the_query_string_is_not_used(server: str) -> None:
    """An old ``?token=`` link: the page does not use it (the form shows) and takes it
    out of the address bar."""
    from playwright.sync_api import expect, sync_playwright

    executable = chromium_path()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            requests = record_requests(page)
            page.goto(f"{server}/_tasks?token={TOKEN}")
            expect(page.locator("#login")).to_be_visible()
            assert "token=" not in page.url
            # Without a token the page does not even ask the API: the form is all it shows.
            api_calls = [r for r in requests if "/_tasks/api/" in r.url]
            assert all("authorization" not in r.headers for r in api_calls)

            # A #token= fragment typed into the open tab's address bar is taken at once.
            page.evaluate(f"location.hash = 'token={TOKEN}'")
            expect(page.locator("#app")).to_be_visible()
            page.wait_for_selector("body[data-loaded='1']", timeout=15_000)
            assert "token=" not in page.url
        finally:
            browser.close()


def test_first_paint_is_the_form_or_the_empty_tables_never_loading(server: str) -> None:
    """What shows before any script runs, or before the API first answers: the token form
    on a dashboard with a token, the tables with their headers on one without; never a
    "loading" placeholder."""
    from playwright.sync_api import expect, sync_playwright

    executable = chromium_path()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            static = browser.new_page(java_script_enabled=False)
            static.goto(f"{server}/_tasks")
            expect(static.locator("#login")).to_be_visible()
            expect(static.locator("#app")).to_be_hidden()
            assert "loading" not in static.inner_text("body").lower()

            static.goto(f"{server}/_open_tasks")  # the same dashboard without a token
            expect(static.locator("#login")).to_be_hidden()
            expect(static.locator("#tasks th")).to_have_count(9)
            expect(static.locator("#cards [data-status='completed']")).to_be_visible()
            assert "loading" not in static.inner_text("body").lower()

            # With scripts on, while the API has not answered yet: the empty tables.
            page = browser.new_page()
            page.route("**/_tasks/api/**", lambda route: None)  # never answered
            page.goto(f"{server}/_tasks#token={TOKEN}")
            expect(page.locator("#app")).to_be_visible()
            expect(page.locator("#login")).to_be_hidden()
            expect(page.locator("#tasks th")).to_have_count(9)
            assert page.get_attribute("body", "data-loaded") is None
            assert "loading" not in page.inner_text("body").lower()
        finally:
            browser.close()


def test_cancel_from_the_dashboard(server: str) -> None:
    """A queued task's Cancel button: the task ends cancelled, the card counts it."""
    from playwright.sync_api import expect, sync_playwright

    executable = chromium_path()
    with httpx.Client(base_url=server, timeout=10) as http:
        task_id = http.post("/export-later").json()["task_id"]
        wait_for_task(http, task_id, "queued")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=executable, args=CHROMIUM_ARGS, headless=True
            )
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                page.goto(f"{server}/_tasks#token={TOKEN}")
                page.wait_for_selector("body[data-loaded='1']", timeout=15_000)
                row = page.locator(f"#tasks tr[data-task-id='{task_id}']")
                expect(row).to_have_attribute("data-status", "queued")
                row.locator("button.cancel").click()
                expect(page.locator("#notice")).to_contain_text(task_id)
                expect(row).to_have_attribute("data-status", "cancelled", timeout=10_000)
                expect(row.locator("button.cancel")).to_have_count(0)
                expect(page.locator("#cards [data-status='cancelled'] .n")).to_have_text("1")
            finally:
                browser.close()
        assert wait_for_task(http, task_id, "cancelled")["status"] == "cancelled"
