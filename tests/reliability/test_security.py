"""Nobody let in: pickle is off everywhere by default, forged messages never run, and the
dashboard and /metrics show no task arguments without the token; previews hide secrets."""

from __future__ import annotations

import base64
import importlib
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
from pacificpy.background.decorators import configure_background_tasks
from pacificpy.background.local import LocalExecutor, get_local_executor
from pacificpy.background.monitor import get_task_monitor
from pacificpy.background.task import TaskEnvelope
from pacificpy.errors import MessageRejected, TaskFailed
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
    for module, name in [
        ("pacificpy.background.backends.celery_backend", "CeleryBackgroundBackend"),
        ("pacificpy.background.backends.arq_backend", "ARQBackgroundBackend"),
    ]:
        try:
            cls = getattr(importlib.import_module(module), name)
        except ImportError:
            continue  # not written yet / extra missing: nothing to check
        param = inspect.signature(cls).parameters.get("allow_pickle")
        assert param is not None, f"{name} takes no allow_pickle"
        assert param.default is False, f"{name}(allow_pickle=...) defaults to {param.default}"
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
    # Requeueing from the dashboard or CLI must not launder it into a valid message.
    await rig.backend.requeue_dead_letter(letter.id)
    await find_letter(rig, lambda d: d.task_id == task_id and d.id != letter.id)
    good = await tasks.add.delay(1, 1)  # the worker is alive and past the forged message
    assert await good.result(timeout=WAIT) == 2
    assert _support.read_counts(counter, [key]) == [0]


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


def _dashboard_modules() -> None:
    for module in ("pacificpy.background.dashboard", "pacificpy.background.metrics"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            pytest.skip(f"{module} is not written yet")


@pytest.fixture
def secured_app() -> Iterator[tuple[Any, dict[str, str]]]:
    """A served app with dashboard and /metrics behind TOKEN, one finished task with secrets
    and one dead letter whose arguments carry PUBLIC_MARKER."""
    _dashboard_modules()
    from pacificpy.testing import TestClient

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
        "/_tasks",
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
    [{}, {"headers": {"Authorization": "Bearer wrong"}}, {"params": {"token": "wrong"}}],
    ids=["no token", "wrong bearer", "wrong query token"],
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
    assert client.get("/_tasks", params={"token": TOKEN}).status_code == 200
    task = client.get(f"/_tasks/api/tasks/{ids['ok']}", headers=auth).text
    assert "alice" in task
    metrics = client.get("/metrics", headers=auth).text
    assert PUBLIC_MARKER not in metrics and "alice" not in metrics, "metrics carry arguments"


def test_mutating_routes_refused_without_a_configured_token() -> None:
    _dashboard_modules()
    from pacificpy.testing import TestClient

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
