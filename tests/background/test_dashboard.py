"""The dashboard's JSON API and page through the TestClient: contents and token rules."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pacificpy import PacificPy
from pacificpy.background import _codec
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import LocalExecutor
from pacificpy.background.monitor import get_task_monitor
from pacificpy.background.task import TaskEnvelope
from pacificpy.errors import ConfigurationError, TaskFailed
from pacificpy.testing import TestClient

TOKEN = "dash-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

PAGE = "/_tasks"
API_GET_ROUTES = [
    "/_tasks/api/tasks",
    "/_tasks/api/tasks/some-id",
    "/_tasks/api/stats",
    "/_tasks/api/queues",
    "/_tasks/api/dead-letters",
]
POST_ROUTES = ["/_tasks/api/dead-letters/some-id/requeue", "/_tasks/api/dead-letters/purge"]

_switch = {"fail": True}


@background
def greet(name: str) -> str:
    return f"hello {name}"


@background
def charge(card: str, api_token: str) -> None:
    if _switch["fail"]:
        raise RuntimeError("card declined")


def poll_letters(client: TestClient, count: int, headers: dict[str, str]) -> list[Any]:
    deadline = time.monotonic() + 10
    while True:
        letters = client.get("/_tasks/api/dead-letters", headers=headers).json()["dead_letters"]
        if len(letters) >= count:
            assert len(letters) == count
            return letters
        assert time.monotonic() < deadline, letters
        time.sleep(0.005)


def client_for(token: str | None = TOKEN, path: str = "/_tasks") -> TestClient:
    app = PacificPy()
    app.include_task_dashboard(path=path, token=token)
    return TestClient(app)


def test_api_shows_tasks_stats_queues_and_dead_letters(executor: LocalExecutor) -> None:
    _switch["fail"] = True
    ok = greet.delay("ann")
    ok.result_sync(5)
    bad = charge.delay("4111-SECRET-CARD", api_token="tok-SECRET")
    with pytest.raises(TaskFailed):
        bad.result_sync(5)

    with client_for() as client:
        tasks = client.get("/_tasks/api/tasks", headers=AUTH).json()["tasks"]
        assert {t["id"]: t["status"] for t in tasks} == {ok.id: "completed", bad.id: "failed"}
        failed = client.get("/_tasks/api/tasks?status=failed", headers=AUTH).json()["tasks"]
        assert [t["id"] for t in failed] == [bad.id]
        assert failed[0]["error"] == "RuntimeError: card declined"
        assert "tok-SECRET" not in failed[0]["args_preview"]
        named = client.get(f"/_tasks/api/tasks?name={greet.name}&limit=1", headers=AUTH).json()
        assert [t["id"] for t in named["tasks"]] == [ok.id]

        one = client.get(f"/_tasks/api/tasks/{ok.id}", headers=AUTH)
        assert one.status_code == 200 and one.json()["result_preview"] == "'hello ann'"
        assert client.get("/_tasks/api/tasks/nope", headers=AUTH).status_code == 404
        assert client.get("/_tasks/api/tasks?status=weird", headers=AUTH).status_code == 400
        assert client.get("/_tasks/api/tasks?limit=0", headers=AUTH).status_code == 400

        stats = client.get("/_tasks/api/stats", headers=AUTH).json()
        assert stats["counts"]["completed"] == 1 and stats["counts"]["failed"] == 1
        assert stats["backend"] == "local" and stats["monitor"] == "InMemoryMonitorStore"
        assert greet.name in stats["tasks"]

        queues = client.get("/_tasks/api/queues", headers=AUTH).json()["queues"]
        assert queues == [{"name": "default", "length": 0}]

        letters = client.get("/_tasks/api/dead-letters", headers=AUTH).json()["dead_letters"]
        assert len(letters) == 1
        letter = letters[0]
        assert letter["task_id"] == bad.id and letter["reason"] == "failed"
        assert "data" not in letter and "args" not in letter and "kwargs" not in letter
        assert letter["args_preview"] == "'4111-SECRET-CARD', api_token='***'"
        assert "card declined" in letter["error"] and letter["requeueable"] is True

        # Requeue after the cause is fixed: the same task id runs again and completes.
        _switch["fail"] = False
        resp = client.post(f"/_tasks/api/dead-letters/{letter['id']}/requeue", headers=AUTH)
        assert resp.status_code == 200 and resp.json()["task_id"] == bad.id
        assert executor.wait_result_sync(bad.id, 5).value is None
        assert get_task_monitor().get(bad.id).status.value == "completed"  # type: ignore[union-attr]
        assert client.get("/_tasks/api/dead-letters", headers=AUTH).json()["dead_letters"] == []
        again = client.post(f"/_tasks/api/dead-letters/{letter['id']}/requeue", headers=AUTH)
        assert again.status_code == 404


def test_purge(executor: LocalExecutor) -> None:
    for i in range(3):
        env = TaskEnvelope(task_id=f"ghost-{i}", task_name="no.such.task")
        executor.submit_raw(_codec.encode(env, signing_key=None))
    with client_for() as client:
        letters = poll_letters(client, 3, AUTH)
        assert {d["reason"] for d in letters} == {"unknown_task"}
        resp = client.post("/_tasks/api/dead-letters/purge", headers=AUTH)
        assert resp.json() == {"purged": 3}
        assert client.get("/_tasks/api/dead-letters", headers=AUTH).json()["dead_letters"] == []


@pytest.mark.parametrize("route", API_GET_ROUTES + POST_ROUTES)
def test_every_api_route_needs_the_bearer_token(route: str) -> None:
    method = "post" if route in POST_ROUTES else "get"
    with client_for() as client:
        call = getattr(client, method)
        missing = call(route)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert call(route, headers={"Authorization": "Bearer wrong"}).status_code == 403
        assert call(route, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 403
        assert call(route, headers={"Authorization": "Bearer "}).status_code == 403
        assert call(route, params={"token": TOKEN}).status_code == 401
        good = call(route, headers=AUTH)
        assert good.status_code in (200, 404)


def test_page_is_served_without_the_token() -> None:
    """The page holds no data: anyone gets it, and it asks for the token itself."""
    with client_for() as client:
        page = client.get(PAGE)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "PacificPy tasks" in page.text and 'id="login-form"' in page.text
        assert "location.hash" in page.text  # reads a #token= fragment
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["cache-control"] == "no-store"
        assert client.get(PAGE, headers={"Authorization": "Bearer wrong"}).status_code == 200


def test_a_query_token_opens_nothing() -> None:
    with client_for() as client:
        assert client.get(f"/_tasks/api/stats?token={TOKEN}").status_code == 401
        assert client.post(f"/_tasks/api/dead-letters/purge?token={TOKEN}").status_code == 401
        wrong_header = {"Authorization": "Bearer wrong"}
        assert (
            client.get(f"/_tasks/api/stats?token={TOKEN}", headers=wrong_header).status_code == 403
        )


@pytest.mark.parametrize("token", ["", "   ", "\n"])
def test_empty_or_blank_token_is_a_configuration_error(token: str) -> None:
    app = PacificPy()
    with pytest.raises(ConfigurationError, match="empty or blank"):
        app.include_task_dashboard(token=token)
    with pytest.raises(ConfigurationError, match="empty or blank"):
        app.include_metrics(token=token)


def test_without_a_token_reads_work_and_nothing_mutates(executor: LocalExecutor) -> None:
    env = TaskEnvelope(task_id="ghost", task_name="no.such.task")
    executor.submit_raw(_codec.encode(env, signing_key=None))
    with client_for(token=None) as client:
        for route in [PAGE, *API_GET_ROUTES]:
            assert client.get(route).status_code in (200, 404), route
        letters = poll_letters(client, 1, {})
        requeue = client.post(f"/_tasks/api/dead-letters/{letters[0]['id']}/requeue")
        assert requeue.status_code == 403 and "token" in requeue.json()["detail"]
        assert client.post("/_tasks/api/dead-letters/purge", headers=AUTH).status_code == 403
        assert len(client.get("/_tasks/api/dead-letters").json()["dead_letters"]) == 1


def test_custom_path() -> None:
    with client_for(path="/admin/tasks/") as client:
        assert client.get("/admin/tasks").status_code == 200
        assert client.get("/admin/tasks/api/stats", headers=AUTH).status_code == 200


def test_requeue_errors_answer_json_and_keep_the_letter(executor: LocalExecutor) -> None:
    """422 when the letter no longer decodes (signing key rotated), 409 when it never
    verified, 503 when the backend refuses the task: the letter stays each time."""
    _switch["fail"] = True
    configure_background_tasks(executor, signing_key=b"the-old-signing-key-0123456789")
    bad = charge.delay("4111", api_token="t")
    with pytest.raises(TaskFailed):
        bad.result_sync(5)
    executor.submit_raw(b"\x00 not a message")
    with client_for() as client:
        letters = {d["reason"]: d for d in poll_letters(client, 2, AUTH)}
        failed, rejected = letters["failed"], letters["rejected"]
        url = "/_tasks/api/dead-letters/{}/requeue".format

        configure_background_tasks(executor, signing_key=b"the-new-signing-key-0123456789")
        resp = client.post(url(failed["id"]), headers=AUTH)
        assert resp.status_code == 422, resp.text
        assert "signature" in resp.json()["detail"]

        resp = client.post(url(rejected["id"]), headers=AUTH)
        assert resp.status_code == 409, resp.text
        assert "cannot be requeued" in resp.json()["detail"]

        configure_background_tasks(executor, signing_key=b"the-old-signing-key-0123456789")
        executor.shutdown_sync(timeout=5)
        resp = client.post(url(failed["id"]), headers=AUTH)
        assert resp.status_code == 503, resp.text
        assert "kept" in resp.json()["detail"]

        kept = client.get("/_tasks/api/dead-letters", headers=AUTH).json()["dead_letters"]
        assert sorted(d["id"] for d in kept) == sorted([failed["id"], rejected["id"]])
        assert all(d in kept for d in (failed, rejected))


def test_the_routes_are_a_list_any_starlette_app_mounts(executor: LocalExecutor) -> None:
    """``dashboard_routes`` and ``metrics_routes`` are plain Starlette route lists."""
    from starlette.applications import Starlette

    from pacificpy.background.metrics import make_registry
    from pacificpy.web.dashboard import dashboard_routes
    from pacificpy.web.metrics import metrics_routes

    greet.delay("ann").result_sync(5)
    registry = make_registry(queue_lengths=False)
    app = Starlette(
        routes=[*dashboard_routes("/admin", token=TOKEN), *metrics_routes(registry, "/m")]
    )
    with TestClient(app) as client:
        assert client.get("/admin").status_code == 200
        assert client.get("/admin/api/stats").status_code == 401
        stats = client.get("/admin/api/stats", headers=AUTH)
        assert stats.status_code == 200 and stats.json()["backend"] == "local"
        scrape = client.get("/m")
        assert scrape.status_code == 200 and "pacificpy_tasks_total" in scrape.text
