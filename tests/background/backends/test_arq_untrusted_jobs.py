"""Jobs an ARQ worker did not expect, on a real in-process ARQ worker (``Worker(burst=True)``)
against the suite's redis-server: a raw pickle while a signing key is set is never loaded,
and a job whose argument is not a message, or whose fields ARQ cannot use, is a dead letter."""

from __future__ import annotations

import pickle
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from arq.connections import RedisSettings

from pacificpy.background import _codec
from pacificpy.background.backends._arq_worker import JOB_NAME, make_job_deserializer
from pacificpy.background.backends.arq_backend import ARQBackgroundBackend
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.task import TaskEnvelope
from tests.background.backends._arq_procs import run_burst
from tests.support.redis_server import RedisServer

pytestmark = [
    pytest.mark.redis,
    # arq 0.28's Worker.close() calls redis-py's deprecated close()
    pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning"),
]

DB = 7
WAIT = 60.0
KEY = b"arq-untrusted-jobs-signing-key-0123456789"


@background
def untrusted_add(a: int, b: int) -> int:
    return a + b


class Plant:
    """Unpickling this creates ``path``: proof that a payload was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


@pytest.fixture
def db_url(redis_server: RedisServer) -> str:
    url = redis_server.fresh_db_url(DB)
    return url


def make_backend(db_url: str, *, key: bytes | None, allow_pickle: bool) -> ARQBackgroundBackend:
    backend = ARQBackgroundBackend(
        redis_settings=RedisSettings.from_dsn(db_url), allow_pickle=allow_pickle
    )
    configure_background_tasks(backend, signing_key=key)
    return backend


@pytest.fixture
def signed_pickle_backend(db_url: str) -> Iterator[ARQBackgroundBackend]:
    backend = make_backend(db_url, key=KEY, allow_pickle=True)
    yield backend
    backend.shutdown_sync()


async def burst(backend: ARQBackgroundBackend, **overrides: Any) -> None:
    await run_burst(backend, timeout=WAIT, **overrides)


def plant(db_url: str, value: bytes, job_id: str | None = None) -> str:
    """Write ``value`` as an ARQ job on the default queue, as any Redis client could.

    PacificPy looks a task's outcome up by job id: a planted message's task id is its job id.
    """
    job_id = job_id or uuid.uuid4().hex
    client = redis.Redis.from_url(db_url)
    client.set(f"arq:job:{job_id}", value, px=3_600_000)
    client.zadd("arq:queue", {job_id: int(time.time() * 1000)})
    client.close()
    return job_id


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_raw_pickle_is_never_loaded_while_a_signing_key_is_set(
    signed_pickle_backend: ARQBackgroundBackend, db_url: str, tmp_path: Path
) -> None:
    backend = signed_pickle_backend
    message = _codec.encode(TaskEnvelope("planted", untrusted_add.name, (1, 2)), signing_key=KEY)
    planted = [tmp_path / "in-args", tmp_path / "in-job"]
    jobs = [
        pickle.dumps({"f": JOB_NAME, "a": [Plant(planted[0])], "k": {}, "t": None, "et": 0}),
        pickle.dumps(
            {"f": JOB_NAME, "a": [message], "k": {}, "t": None, "et": 0, "x": Plant(planted[1])}
        ),
    ]
    for job in jobs:
        plant(db_url, job)
    good = await untrusted_add.delay(20, 22)
    await burst(backend)
    assert await good.result(timeout=WAIT) == 42
    assert not any(p.exists() for p in planted), "a pickled job was loaded"
    letters = await backend.dead_letters()
    assert len(letters) == len(jobs)
    assert {d.reason for d in letters} == {"rejected"}
    assert all("not signed" in d.error for d in letters)
    assert not any(d.requeueable for d in letters)


async def test_raw_pickle_without_a_signing_key_is_trusted_as_documented(
    db_url: str, tmp_path: Path
) -> None:
    """allow_pickle=True with no key: every producer is trusted (docs/arq.md)."""
    backend = make_backend(db_url, key=None, allow_pickle=True)
    try:
        env = TaskEnvelope("pickled-job", untrusted_add.name, (2, 3))
        job = {"f": JOB_NAME, "a": [_codec.encode(env)], "k": {}, "t": None, "et": now_ms()}
        plant(db_url, pickle.dumps(job), "pickled-job")
        await burst(backend)
        assert (await backend.wait_result("pickled-job", timeout=WAIT)).value == 5
        assert await backend.dead_letters() == []
    finally:
        backend.shutdown_sync()


async def test_a_job_whose_argument_is_not_a_message_is_a_dead_letter(
    signed_pickle_backend: ARQBackgroundBackend, db_url: str
) -> None:
    backend = signed_pickle_backend
    marker = uuid.uuid4().hex
    bad: list[dict[str, Any]] = [
        {"f": JOB_NAME, "a": [5], "k": {}, "t": None, "et": now_ms(), "m": marker},
        {"f": JOB_NAME, "a": [{"v": 1}], "m": marker},
        {"f": JOB_NAME, "a": [None], "m": marker},
        {"f": JOB_NAME, "a": [], "m": marker},
        {"f": JOB_NAME, "a": ["one", "two"], "m": marker},
        {"f": JOB_NAME, "a": ["one"], "k": {"extra": 1}, "m": marker},
        {"f": JOB_NAME, "a": "x", "m": marker},
        {"f": 5, "a": [], "m": marker},
    ]
    for job in bad:
        plant(db_url, orjson.dumps(job))
    # ARQ's pickle format, allowed here but only inside a signed envelope: a dead letter too.
    plant(db_url, pickle.dumps({"f": JOB_NAME, "a": [7], "k": {}, "t": None, "et": 0}))
    good = await untrusted_add.delay(1, 1)
    await burst(backend)
    assert await good.result(timeout=WAIT) == 2
    letters = await backend.dead_letters(limit=100)
    assert len(letters) == len(bad) + 1
    assert {d.reason for d in letters} == {"rejected"}
    assert sum(marker in d.data for d in letters) == len(bad)


async def test_job_fields_arq_cannot_use_become_dead_letters(
    signed_pickle_backend: ARQBackgroundBackend, db_url: str
) -> None:
    """A try count or enqueue time of the wrong type would raise inside ARQ's worker, outside
    any handler: the job would stay queued and be picked up again forever."""
    backend = signed_pickle_backend
    message = _codec.encode(TaskEnvelope("m", untrusted_add.name, (1, 2)), signing_key=KEY)
    text = message.decode()
    bad: list[dict[str, Any]] = [
        {"f": JOB_NAME, "a": [text], "k": {}, "t": None, "et": "soon"},
        {"f": JOB_NAME, "a": [text], "k": {}, "t": None, "et": 10**18},
        {"f": JOB_NAME, "a": [text], "k": {}, "t": "1", "et": now_ms()},
        {"f": "other", "a": [], "k": {}, "t": None, "et": -(10**18)},
    ]
    for job in bad:
        plant(db_url, orjson.dumps(job))
    # A PacificPy message with an enqueue time ARQ cannot turn into a date still runs.
    huge_ts = orjson.dumps(
        {"v": 1, "id": "huge-ts", "t": untrusted_add.name, "a": [3, 4], "k": {}, "ts": 1e300}
    )
    plant(db_url, _codec_sign(huge_ts), "huge-ts")
    await burst(backend)
    assert (await backend.wait_result("huge-ts", timeout=WAIT)).value == 7
    letters = await backend.dead_letters(limit=100)
    assert len(letters) == len(bad)
    assert {d.reason for d in letters} == {"rejected"}


async def test_a_non_message_from_another_deserializer_is_a_dead_letter(
    signed_pickle_backend: ARQBackgroundBackend,
    db_url: str,
) -> None:
    """The job function itself dead-letters an argument that is not bytes or text (a user's
    own ``job_deserializer`` may hand it one)."""
    backend = signed_pickle_backend
    own = make_job_deserializer(False)

    def loose(raw: bytes) -> dict[str, Any]:
        if raw.startswith(b"["):
            return {"f": JOB_NAME, "a": (orjson.loads(raw),), "k": {}, "t": None, "et": now_ms()}
        return own(raw)

    plant(db_url, b"[1, 2, 3]")
    await burst(backend, job_deserializer=loose)
    (letter,) = await backend.dead_letters()
    assert letter.reason == "rejected"
    assert "list" in letter.error
    assert letter.data == "[1,2,3]"


def _codec_sign(body: bytes) -> bytes:
    import hashlib
    import hmac

    return b"pp1." + hmac.new(KEY, body, hashlib.sha256).hexdigest().encode() + b"." + body
