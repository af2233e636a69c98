"""Nobody let in: pickle is off everywhere by default (requeue included), forged messages
never run, a dead letter that cannot be requeued stays where it is, and the dashboard and
/metrics show no task arguments without the token; previews hide secrets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import inspect
import pickle
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from pacificpy import PacificPy
from pacificpy.background import _codec
from pacificpy.background.backend import BackgroundBackend
from pacificpy.background.backends.arq_backend import ARQBackgroundBackend
from pacificpy.background.backends.celery_backend import CeleryBackgroundBackend
from pacificpy.background.backends.memory import InMemoryBackend
from pacificpy.background.backends.sqlite import SQLiteBackgroundBackend
from pacificpy.background.dead_letter import DeadLetter
from pacificpy.background.decorators import configure_background_tasks
from pacificpy.background.local import LocalExecutor, get_local_executor
from pacificpy.background.monitor import get_task_monitor
from pacificpy.background.task import Message, TaskEnvelope
from pacificpy.errors import (
    ConfigurationError,
    DeadLetterNotRequeueable,
    DeadLetterUndecodable,
    EnqueueError,
    MessageRejected,
    TaskFailed,
)
from pacificpy.testing import TestClient
from pacificpy.web import dashboard, metrics
from tests.conformance import tasks
from tests.conformance.harness import SIGNING_KEY, Harness
from tests.reliability import _support
from tests.reliability import tasks as rel_tasks
from tests.reliability.test_bad_input_queue import find_letter, signed

pytestmark = pytest.mark.redis

WAIT = 60.0
TOKEN = "dashboard-token-" + uuid.uuid4().hex


# -- pickle ------------------------------------------------------------------------------


def test_pickle_is_off_by_default_in_every_constructor() -> None:
    assert get_local_executor().allow_pickle is False
    assert LocalExecutor().allow_pickle is False
    for cls in (CeleryBackgroundBackend, ARQBackgroundBackend):
        param = inspect.signature(cls).parameters.get("allow_pickle")
        assert param is not None, f"{cls.__name__} takes no allow_pickle"
        assert param.default is False, (
            f"{cls.__name__}(allow_pickle=...) defaults to {param.default}"
        )
    assert inspect.signature(_codec.decode).parameters["allow_pickle"].default is False
    assert inspect.signature(BackgroundBackend.__init__).parameters["allow_pickle"].default is False


def test_rig_backends_refuse_pickle(rig: Harness) -> None:
    assert rig.backend is not None
    assert rig.backend.allow_pickle is False


class _Planted:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def _pickle_message(path: Path, name: str) -> tuple[str, bytes]:
    task_id = uuid.uuid4().hex
    blob = pickle.dumps(((_Planted(str(path)),), {}))
    body = {
        "v": 1, "id": task_id, "t": name, "q": "default", "n": 1, "ts": time.time(),
        "s": "pickle", "p": base64.b64encode(blob).decode(), "a": [], "k": {},
    }  # fmt: skip
    env_data = orjson.dumps(body)
    return task_id, _support_sign(env_data)


def _support_sign(body: bytes) -> bytes:
    from tests.reliability.test_bad_input_queue import signed_raw

    return signed_raw(body)


def test_planted_pickle_would_run_if_allowed(tmp_path: Path) -> None:
    """The payload of the next test really executes code when a pickle is loaded."""
    path = tmp_path / "planted"
    _, data = _pickle_message(path, tasks.echo.name)
    with pytest.raises(MessageRejected, match="allow_pickle"):
        _codec.decode(data, signing_key=SIGNING_KEY)
    assert not path.exists()
    _codec.decode(data, signing_key=SIGNING_KEY, allow_pickle=True)
    assert path.exists()


async def test_workers_never_unpickle(rig: Harness, tmp_path: Path) -> None:
    assert rig.backend is not None
    path = tmp_path / "planted"
    task_id, data = _pickle_message(path, tasks.echo.name)
    rig.inject_raw(rig.backend, data, "default")
    letter = await find_letter(rig, lambda d: d.task_id == task_id)
    assert "allow_pickle" in letter.error
    assert not path.exists(), "a worker unpickled a message while allow_pickle was off"


# -- signing -----------------------------------------------------------------------------


async def test_forged_message_never_runs_even_when_requeued(
    rig: Harness, counter: redis.Redis
) -> None:
    assert rig.backend is not None
    key = _support.new_keys(1, "forged")[0]
    task_id, forged = signed(tasks.count.name, [key], key=b"an-attacker-key-0123456789abcdef")
    rig.inject_raw(rig.backend, forged, "default")
    letter = await find_letter(rig, lambda d: d.task_id == task_id)
    assert letter.reason == "rejected"
    assert "signature" in letter.error
    assert letter.requeueable is False
    # Requeueing from the dashboard or CLI must not launder it into a valid message: it is
    # refused, and the letter stays as it was.
    with pytest.raises(DeadLetterNotRequeueable):
        await rig.backend.requeue_dead_letter(letter.id)
    with pytest.raises(DeadLetterNotRequeueable):
        rig.backend.requeue_dead_letter_sync(letter.id)
    assert await _kept(rig.backend, letter) == [letter.to_dict()]
    good = await tasks.add.delay(1, 1)  # the worker is alive and past the forged message
    assert await good.result(timeout=WAIT) == 2
    assert _support.read_counts(counter, [key]) == [0]


# -- requeue ------------------------------------------------------------------------------

ROTATED_KEY = b"a-rotated-signing-key-0123456789abcdef"


async def _kept(backend: BackgroundBackend, letter: DeadLetter) -> list[dict[str, Any]]:
    """The letter as the backend still holds it (a list: empty when it is gone)."""
    return [d.to_dict() for d in await backend.dead_letters(limit=10_000) if d.id == letter.id]


def _plant(backend: BackgroundBackend, letter: DeadLetter) -> None:
    """Put ``letter`` in the backend's dead-letter queue, as anyone who can write to its
    store (the Redis of Celery and ARQ) could."""
    if isinstance(backend, InMemoryBackend) and not isinstance(backend, SQLiteBackgroundBackend):
        backend._dead.add(letter)
    else:
        assert isinstance(
            backend, CeleryBackgroundBackend | ARQBackgroundBackend | SQLiteBackgroundBackend
        )
        backend.state.add_dead_letter(letter)


def _letter(task_id: str, name: str, data: bytes, *, queue: str = "default") -> DeadLetter:
    return DeadLetter(
        id=uuid.uuid4().hex,
        task_id=task_id,
        task_name=name,
        reason="failed",
        error="planted",
        queue=queue,
        data=data.decode(),
        requeueable=True,
    )


async def test_requeue_never_unpickles_a_planted_letter(rig: Harness, tmp_path: Path) -> None:
    """A letter whose message is a (correctly signed) pickle is refused on requeue by a
    backend built without allow_pickle: nothing is unpickled, the letter stays."""
    backend = rig.backend
    assert backend is not None and backend.allow_pickle is False
    path = tmp_path / "planted"
    task_id, data = _pickle_message(path, tasks.echo.name)
    letter = _letter(task_id, tasks.echo.name, data)
    _plant(backend, letter)
    with pytest.raises(DeadLetterUndecodable, match="allow_pickle"):
        await backend.requeue_dead_letter(letter.id)
    with pytest.raises(DeadLetterUndecodable, match="allow_pickle"):
        backend.requeue_dead_letter_sync(letter.id)
    assert not path.exists(), "requeue unpickled a dead letter while allow_pickle was off"
    assert await _kept(backend, letter) == [letter.to_dict()]


async def test_requeue_after_a_key_rotation_keeps_the_letter(rig: Harness) -> None:
    """A letter signed with an old key no longer verifies: requeue says so and the letter
    stays, unchanged, until the old key is back (then it requeues and runs on a worker)."""
    backend = rig.backend
    assert backend is not None
    handle = await tasks.fail_always.delay("before the rotation")
    with pytest.raises(TaskFailed):
        await handle.result(timeout=WAIT)
    letter = await find_letter(rig, lambda d: d.task_id == handle.id)
    configure_background_tasks(backend, signing_key=ROTATED_KEY)
    with pytest.raises(DeadLetterUndecodable, match="signature"):
        await backend.requeue_dead_letter(letter.id)
    with pytest.raises(DeadLetterUndecodable, match="signature"):
        backend.requeue_dead_letter_sync(letter.id)
    assert await _kept(backend, letter) == [letter.to_dict()]

    configure_background_tasks(backend, signing_key=SIGNING_KEY)
    if isinstance(backend, LocalExecutor):
        # The local executor posts an outcome just before it stops counting the task as
        # running; until then the same id is refused as a duplicate.
        assert await asyncio.to_thread(backend.join, WAIT)
    assert await backend.requeue_dead_letter(letter.id) == handle.id
    assert await _kept(backend, letter) == []
    outcome = await backend.wait_result(handle.id, timeout=WAIT)  # it ran again, on a worker
    assert outcome.error == "before the rotation" and outcome.attempts == 1


@contextlib.contextmanager
def _refusing_enqueue(rig: Harness, message: Message) -> Iterator[BackgroundBackend]:
    """A backend that refuses ``message`` while its dead letters stay readable and writable.

    Local: the executor, shut down. Celery: a string where the message's queue list must go
    (Redis answers LPUSH with WRONGTYPE). ARQ: the same Redis seen as a user whom an ACL
    denies EVAL and EVALSHA, so the enqueue script never runs. SQLite (durable: it takes
    tasks after a shutdown too): a trigger that refuses rows of the message's queue.
    """
    backend = rig.backend
    if isinstance(backend, SQLiteBackgroundBackend):
        trigger = "refuse_" + uuid.uuid4().hex
        backend.db.write(
            f"CREATE TRIGGER {trigger} BEFORE INSERT ON pacificpy_tasks "
            f"WHEN NEW.queue = '{message.queue}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        try:
            yield backend
        finally:
            backend.db.write(f"DROP TRIGGER {trigger}")
    elif isinstance(backend, LocalExecutor):
        backend.shutdown_sync(timeout=5)
        yield backend
    elif isinstance(backend, CeleryBackgroundBackend):
        key = backend._frame(message, None)[0]
        client = backend._redis()
        client.set(key, b"not a queue")
        try:
            yield backend
        finally:
            client.delete(key)
    else:
        assert isinstance(backend, ARQBackgroundBackend)
        user, password = "no-eval-" + uuid.uuid4().hex[:8], uuid.uuid4().hex
        admin = backend.state.sync
        admin.execute_command(
            "ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all", "-eval", "-evalsha"
        )
        settings = dataclasses.replace(backend.redis_settings, username=user, password=password)
        refusing = ARQBackgroundBackend(redis_settings=settings, shutdown_timeout=5.0)
        refusing.signing_key = backend.signing_key
        try:
            yield refusing
        finally:
            refusing.shutdown_sync(timeout=5)
            admin.execute_command("ACL", "DELUSER", user)


async def test_requeue_keeps_the_letter_when_the_enqueue_fails(rig: Harness) -> None:
    assert rig.backend is not None
    queue = "blocked-" + uuid.uuid4().hex
    env = TaskEnvelope(uuid.uuid4().hex, tasks.add.name, (1, 2), {}, queue=queue)
    data = _codec.encode(env, signing_key=SIGNING_KEY)
    letter = _letter(env.task_id, env.task_name, data, queue=queue)
    _plant(rig.backend, letter)
    with _refusing_enqueue(rig, Message(env, data)) as backend:
        with pytest.raises(EnqueueError):
            await backend.requeue_dead_letter(letter.id)
        with pytest.raises(EnqueueError):
            backend.requeue_dead_letter_sync(letter.id)
        assert await _kept(backend, letter) == [letter.to_dict()]
    assert rig.backend.queue_length_sync(queue) == 0


async def test_dashboard_requeue_answers_with_the_reason_and_keeps_the_letter(
    rig: Harness, tmp_path: Path
) -> None:
    """Through the dashboard on every backend: 422 for a planted pickle (never unpickled in
    the web process), 409 for a forged message, 404 for an unknown id."""
    backend = rig.backend
    assert backend is not None
    path = tmp_path / "planted"
    task_id, data = _pickle_message(path, tasks.echo.name)
    pickled = _letter(task_id, tasks.echo.name, data)
    _plant(backend, pickled)
    forged_id, forged = signed(tasks.echo.name, ["x"], key=b"an-attacker-key-0123456789abcdef")
    rig.inject_raw(backend, forged, "default")
    forged_letter = await find_letter(rig, lambda d: d.task_id == forged_id)
    app = PacificPy()
    app.include_task_dashboard(token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    api = "/_tasks/api/dead-letters"
    with TestClient(app) as client:
        response = client.post(f"{api}/{pickled.id}/requeue", headers=auth)
        assert response.status_code == 422, response.text
        assert "allow_pickle" in response.json()["detail"]
        response = client.post(f"{api}/{forged_letter.id}/requeue", headers=auth)
        assert response.status_code == 409, response.text
        assert "cannot be requeued" in response.json()["detail"]
        assert client.post(f"{api}/no-such-letter/requeue", headers=auth).status_code == 404
    assert not path.exists(), "the dashboard unpickled a dead letter"
    assert await _kept(backend, pickled) == [pickled.to_dict()]
    assert await _kept(backend, forged_letter) == [forged_letter.to_dict()]


def test_signing_key_is_checked_byte_for_byte() -> None:
    env = TaskEnvelope("abc", tasks.add.name, (1, 2), {})
    data = _codec.encode(env, signing_key=SIGNING_KEY)
    assert _codec.decode(data, signing_key=SIGNING_KEY).args == (1, 2)
    for bad in (
        data[:10] + (b"0" if data[10:11] != b"0" else b"1") + data[11:],  # signature digit
        data.replace(b"[1,2]", b"[1,3]"),  # body
        data.split(b".", 2)[2],  # signature stripped
        b"pp1." + b"0" * 64 + b"." + data.split(b".", 2)[2],  # zero signature
    ):
        with pytest.raises(MessageRejected):
            _codec.decode(bad, signing_key=SIGNING_KEY)


# -- dashboard, metrics, previews -----------------------------------------------------------

SECRETS = {
    "password": "pw-" + uuid.uuid4().hex,
    "api_token": "tok-" + uuid.uuid4().hex,
    "client_secret": "sec-" + uuid.uuid4().hex,
    "Authorization": "Bearer auth-" + uuid.uuid4().hex,
}
NESTED_SECRET = "nested-" + uuid.uuid4().hex
PUBLIC_MARKER = "public-" + uuid.uuid4().hex


def _secret_call() -> tuple[tuple[Any, ...], dict[str, Any]]:
    kwargs: dict[str, Any] = {k: v for k, v in SECRETS.items() if k not in ("password",)}
    kwargs["headers"] = {"X-Auth-Token": NESTED_SECRET, "Accept": PUBLIC_MARKER}
    return ("alice",), {"password": SECRETS["password"], **kwargs}


def _leaks(text: str) -> list[str]:
    return [s for s in [*SECRETS.values(), NESTED_SECRET] if s in text]


def test_argument_previews_redact_secrets() -> None:
    executor = get_local_executor(2)
    configure_background_tasks(executor)
    args, kwargs = _secret_call()
    handle = rel_tasks.takes_secrets.delay(*args, **kwargs)
    assert handle.result_sync(timeout=WAIT) == "alice"
    record = get_task_monitor().get(handle.id)
    assert record is not None and record.args_preview is not None
    preview = record.args_preview
    assert "alice" in preview
    assert not _leaks(preview), f"secrets in the preview: {preview}"
    for name in ("password", "api_token", "client_secret", "Authorization"):
        assert name in preview, f"the key {name} should stay visible, its value hidden"
    executor.shutdown_sync(timeout=5)


@pytest.fixture
def secured_app() -> Iterator[tuple[Any, dict[str, str]]]:
    """A served app with dashboard and /metrics behind TOKEN, one finished task with secrets
    and one dead letter whose arguments carry PUBLIC_MARKER."""
    executor = get_local_executor(2)
    configure_background_tasks(executor)
    app = PacificPy()
    app.include_task_dashboard(token=TOKEN)
    app.include_metrics(token=TOKEN)
    with TestClient(app) as client:
        args, kwargs = _secret_call()
        ok = rel_tasks.takes_secrets.delay(*args, **kwargs)
        ok.result_sync(timeout=WAIT)
        failed = tasks.fail_always.delay(PUBLIC_MARKER)
        with pytest.raises(TaskFailed):
            failed.result_sync(timeout=WAIT)
        assert executor.dead_letters_sync()
        letter_id = executor.dead_letters_sync()[0].id
        yield client, {"ok": ok.id, "failed": failed.id, "letter": letter_id}


def _dashboard_gets(ids: dict[str, str]) -> list[str]:
    return [
        "/_tasks/api/tasks",
        f"/_tasks/api/tasks/{ids['ok']}",
        f"/_tasks/api/tasks/{ids['failed']}",
        "/_tasks/api/stats",
        "/_tasks/api/queues",
        "/_tasks/api/dead-letters",
        "/metrics",
    ]


@pytest.mark.parametrize(
    "credentials",
    [
        {},
        {"headers": {"Authorization": "Bearer wrong"}},
        {"headers": {"Authorization": "Bearer "}},
        {"headers": {"Authorization": f"Basic {TOKEN}"}},
        {"params": {"token": "wrong"}},
        {"params": {"token": TOKEN}},
    ],
    ids=["no token", "wrong bearer", "empty bearer", "other scheme", "wrong query", "query"],
)
def test_dashboard_and_metrics_leak_nothing_without_the_token(
    secured_app: tuple[Any, dict[str, str]], credentials: dict[str, Any]
) -> None:
    client, ids = secured_app
    for path in _dashboard_gets(ids):
        response = client.get(path, **credentials)
        assert response.status_code in (401, 403), f"{path}: {response.status_code}"
        assert PUBLIC_MARKER not in response.text, path
        assert "alice" not in response.text, path
        assert not _leaks(response.text), path
    for path in (
        f"/_tasks/api/dead-letters/{ids['letter']}/requeue",
        "/_tasks/api/dead-letters/purge",
    ):
        response = client.post(path, **credentials)
        assert response.status_code in (401, 403), f"POST {path}: {response.status_code}"
    assert get_dead_letter_ids() == [ids["letter"]], "a refused POST changed the dead letters"


def get_dead_letter_ids() -> list[str]:
    from pacificpy.background.decorators import get_backend

    return [d.id for d in get_backend().dead_letters_sync()]


def test_with_the_token_arguments_show_but_secrets_stay_hidden(
    secured_app: tuple[Any, dict[str, str]],
) -> None:
    client, ids = secured_app
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for path in _dashboard_gets(ids):
        response = client.get(path, headers=auth)
        assert response.status_code == 200, f"{path}: {response.status_code}"
        assert not _leaks(response.text), f"{path} shows a secret"
    task = client.get(f"/_tasks/api/tasks/{ids['ok']}", headers=auth).text
    assert "alice" in task
    metrics = client.get("/metrics", headers=auth).text
    assert PUBLIC_MARKER not in metrics and "alice" not in metrics, "metrics carry arguments"


def test_mutating_routes_refused_without_a_configured_token() -> None:
    executor = get_local_executor(2)
    configure_background_tasks(executor)
    app = PacificPy()
    app.include_task_dashboard()
    with TestClient(app) as client:
        failed = tasks.fail_always.delay("x")
        with pytest.raises(TaskFailed):
            failed.result_sync(timeout=WAIT)
        letter = executor.dead_letters_sync()[0]
        for path in (
            f"/_tasks/api/dead-letters/{letter.id}/requeue",
            "/_tasks/api/dead-letters/purge",
        ):
            for headers in ({}, {"Authorization": "Bearer anything"}):
                response = client.post(path, headers=headers)
                assert response.status_code == 403, f"POST {path}: {response.status_code}"
        assert [d.id for d in executor.dead_letters_sync()] == [letter.id]


def test_the_page_is_served_without_the_token_and_holds_no_data(
    secured_app: tuple[Any, dict[str, str]],
) -> None:
    client, ids = secured_app
    page = client.get("/_tasks")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # The same static page for everyone, marked only to paint the token form first.
    assert page.text == dashboard.page_html(token_required=True)
    for value in (*ids.values(), PUBLIC_MARKER, "alice", TOKEN):
        assert value not in page.text
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"


def test_a_query_token_authenticates_nothing(secured_app: tuple[Any, dict[str, str]]) -> None:
    """The token goes only in the Authorization header; ?token= is as good as no token."""
    client, ids = secured_app
    for path in _dashboard_gets(ids):
        response = client.get(path, params={"token": TOKEN})
        assert response.status_code == 401, f"{path}: {response.status_code}"
    response = client.post("/_tasks/api/dead-letters/purge", params={"token": TOKEN})
    assert response.status_code == 401
    assert get_dead_letter_ids() == [ids["letter"]]


@pytest.mark.parametrize("token", ["", " ", "\t\n", " padded ", "trailing\n"])
def test_empty_or_blank_tokens_are_refused_at_mount_time(token: str) -> None:
    app = PacificPy()
    with pytest.raises(ConfigurationError, match="include_task_dashboard"):
        app.include_task_dashboard(token=token)
    with pytest.raises(ConfigurationError, match="include_metrics"):
        app.include_metrics(token=token)
    with pytest.raises(ConfigurationError):
        dashboard.mount_dashboard(app, token=token)
    with pytest.raises(ConfigurationError):
        metrics.mount_metrics(app, token=token)
    with TestClient(app) as client:  # nothing was mounted
        for path in ("/_tasks", "/_tasks/api/stats", "/metrics"):
            assert client.get(path, headers={"Authorization": "Bearer "}).status_code == 404


def test_an_empty_presented_token_never_matches() -> None:
    """Even a guard handed an empty token (which mount refuses) lets no empty token in."""
    from starlette.exceptions import HTTPException
    from starlette.requests import Request

    from pacificpy.web.auth import require_token

    for header in (b"Bearer ", b"Bearer", b"bearer   ", b"", b"Basic "):
        request = Request({"type": "http", "headers": [(b"authorization", header)]})
        with pytest.raises(HTTPException) as info:
            require_token(request, "")
        assert info.value.status_code == 403, header
