"""Fuzzing what workers read: random bytes, truncated and bit-flipped messages, fields of the
wrong type, huge and deeply nested payloads, jobs that are not messages at all.

Each input must end as a run (or a scheduled retry) or as exactly one dead letter: never an
exception out of the worker's entry point, a message sent back to loop, or a silent drop.

The property tests drive each backend's worker-side entry point in this process, against
this suite's real redis-server: the local executor's ``execution.execute_sync``, the ARQ job
deserializer followed by the ARQ job function (``WorkerState.run``), and the Celery task
body (``_celery_worker.deliver``). The end-to-end test plants a fixed sample of fuzzed
messages on each real backend (local executor threads, ARQ and Celery worker processes).
Hypothesis runs derandomized with a fixed number of examples, so CI is reproducible.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import pickle
import random
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aioredis
from arq.connections import RedisSettings
from arq.worker import Retry as ArqRetry
from celery import Celery
from celery.exceptions import Reject
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pacificpy.background import _codec, execution
from pacificpy.background.backends._arq_worker import JOB_NAME, WorkerState, make_job_deserializer
from pacificpy.background.backends._celery_worker import deliver
from pacificpy.background.backends.arq_backend import ARQBackgroundBackend
from pacificpy.background.backends.celery_backend import CeleryBackgroundBackend
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import LocalExecutor
from pacificpy.background.task import TaskEnvelope
from tests.conformance import tasks
from tests.conformance.harness import SIGNING_KEY, Harness
from tests.reliability import _support

pytestmark = pytest.mark.redis

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
DB = 9
WAIT = 60.0

# -- tasks the fuzzed messages name ------------------------------------------------------
_ran: list[str] = []
_ran_lock = threading.Lock()


def _note(name: str) -> None:
    with _ran_lock:
        _ran.append(name)


@background
def fuzz_sink(*args: Any, **kwargs: Any) -> None:
    """Takes anything and runs."""
    _note("sink")


@background
def fuzz_fail(*args: Any, **kwargs: Any) -> None:
    """Fails for good: its messages end as a dead letter (reason failed)."""
    _note("fail")
    raise ValueError("fuzz_fail always fails")


@background(retries=1, retry_backoff=0.01, retry_jitter=False)
def fuzz_retry(*args: Any, **kwargs: Any) -> None:
    """Fails; attempt 1 is retried, a later one is a dead letter."""
    _note("retry")
    raise ValueError("fuzz_retry always fails")


@background
def fuzz_two(a: int, b: int) -> None:
    """Binds only two positional arguments: other calls are rejected."""
    _note("two")


NAMES = [fuzz_sink.name, fuzz_fail.name, fuzz_retry.name, fuzz_two.name, "no.such.task"]


# -- building messages -------------------------------------------------------------------
def sign(body: bytes, key: bytes = SIGNING_KEY) -> bytes:
    return b"pp1." + hmac.new(key, body, hashlib.sha256).hexdigest().encode() + b"." + body


def body_of(name: str, args: list[Any], **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "v": 1, "id": uuid.uuid4().hex, "t": name, "q": "default", "n": 1,
        "ts": time.time(), "a": args, "k": {},
    }  # fmt: skip
    body.update(fields)
    return body


#: Task ids drawn by Hypothesis (not uuid4: its examples must be the same on every run).
ids = st.integers(0, 2**128 - 1).map(lambda i: f"{i:032x}")
TS = 1_700_000_000.0


def flip(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for index, bit in flips:
        out[index % len(out)] ^= 1 << bit
    return bytes(out)


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def valid_messages(draw: st.DrawFn) -> bytes:
    """A well-formed message, signed with the suite's key (or, now and then, unsigned)."""
    name = draw(st.sampled_from(NAMES))
    args = draw(st.lists(json_values, max_size=3))
    attempt = draw(st.integers(1, 3))
    data = orjson.dumps(body_of(name, args, n=attempt, id=draw(ids), ts=TS))
    return sign(data) if draw(st.integers(0, 9)) else data


@st.composite
def wrong_fields(draw: st.DrawFn) -> bytes:
    """A signed message with one field replaced by a value of any JSON type."""
    field = draw(st.sampled_from(["v", "id", "t", "q", "n", "ts", "pid", "ik", "tr", "s", "p",
                                  "a", "k"]))  # fmt: skip
    body = body_of(draw(st.sampled_from(NAMES)), [1, 2], id=draw(ids), ts=TS)
    body[field] = draw(json_values)
    return sign(orjson.dumps(body))


@st.composite
def huge_messages(draw: st.DrawFn) -> bytes:
    size = draw(st.integers(100_000, 2_000_000))
    if draw(st.booleans()):
        return sign(orjson.dumps(body_of(fuzz_sink.name, ["x" * size], id=draw(ids), ts=TS)))
    return b"{" * size


@st.composite
def nested_messages(draw: st.DrawFn) -> bytes:
    """Arguments nested deep: within JSON's depth limit they run, past it they are rejected."""
    depth = draw(st.integers(1, 3000))
    name = draw(st.sampled_from([fuzz_sink.name, fuzz_fail.name]))
    body = orjson.dumps(body_of(name, [], id=draw(ids), ts=TS)).replace(
        b'"a":[]', b'"a":[' + nested(depth) + b"]"
    )
    return sign(body)


@st.composite
def pickled_messages(draw: st.DrawFn) -> bytes:
    """Pickle where it is not allowed: in a signed envelope, or as a raw ARQ job."""
    args = tuple(draw(st.lists(json_values, max_size=2)))
    if draw(st.booleans()):
        env = TaskEnvelope(draw(ids), fuzz_sink.name, args, serializer="pickle")
        return _codec.encode(env, signing_key=SIGNING_KEY)
    p = base64.b64encode(pickle.dumps((args, {}))).decode()
    return pickle.dumps({"f": JOB_NAME, "a": [p], "k": {}, "t": None, "et": 0})


wire_messages = st.one_of(
    st.binary(max_size=400),
    valid_messages(),
    valid_messages().flatmap(lambda m: st.integers(0, len(m) - 1).map(lambda i: m[:i])),
    valid_messages().flatmap(
        lambda m: st.lists(
            st.tuples(st.integers(0, len(m) - 1), st.integers(0, 7)), min_size=1, max_size=3
        ).map(lambda fs: flip(m, fs))
    ),
    wrong_fields(),
    huge_messages(),
    nested_messages(),
    pickled_messages(),
)

#: What else an ARQ job or a Celery task body can be handed: any JSON value.
not_messages = json_values.filter(lambda v: not isinstance(v, str))


@st.composite
def arq_jobs(draw: st.DrawFn) -> bytes:
    """ARQ's own job format naming PacificPy's job function, with fields of any type."""
    job: dict[str, Any] = {"f": JOB_NAME}
    for field in ("a", "k", "t", "et"):
        if draw(st.booleans()):
            job[field] = draw(json_values)
    if draw(st.booleans()):
        job["a"] = [draw(valid_messages()).decode("utf-8", "replace")]
    return orjson.dumps(job)


# -- outcome bookkeeping -----------------------------------------------------------------
def runs() -> tuple[int, int]:
    """``(ok, failing)``: runs of the tasks that succeed and of the ones that raise, since
    the last call."""
    with _ran_lock:
        ok = sum(name in ("sink", "two") for name in _ran)
        failing = len(_ran) - ok
        _ran.clear()
    return ok, failing


def assert_one_end(letters: int, what: object, *, retried: bool = False) -> None:
    """A run (or a scheduled retry) or exactly one dead letter, and not both. A task that
    raised and was not retried ended as a dead letter (reason failed), which must be kept."""
    ok, failing = runs()
    shown = repr(what)[:300]
    assert failing <= 1 and not (ok and failing), f"ran {ok} + {failing} times: {shown}"
    ended = (ok + int(retried), letters)
    assert ended in {(1, 0), (0, 1)}, f"ran {ok}x, retried {retried}, {letters} letters: {shown}"
    if failing and not retried:
        assert letters == 1, f"a failed run left no dead letter: {shown}"


@pytest.fixture
def fuzz_url(rel_redis_url: str) -> str:
    url = rel_redis_url.rpartition("/")[0] + f"/{DB}"
    redis.Redis.from_url(url).flushdb()
    runs()
    return url


# -- in-process property tests, one per backend ------------------------------------------
@FUZZ
@given(data=wire_messages)
def test_local_worker_path(data: bytes) -> None:
    backend = LocalExecutor()
    configure_background_tasks(backend, signing_key=SIGNING_KEY)
    decision = execution.execute_sync(data, backend)
    assert decision.kind in ("completed", "retry", "failed", "dead"), decision.kind
    letter = decision.dead_letter
    assert (letter is not None) == (decision.kind in ("failed", "dead"))
    if letter is not None:
        orjson.dumps(letter.to_dict())  # a Redis-backed store could keep it
    assert_one_end(int(letter is not None), data, retried=decision.kind == "retry")


class ArqRig:
    """An ARQ worker's job path in this process: its deserializer, then its job function."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.url = url
        self.tmp = tmp
        self.backend = ARQBackgroundBackend(
            redis_settings=RedisSettings.from_dsn(url), allow_pickle=True
        )
        configure_background_tasks(self.backend, signing_key=SIGNING_KEY)
        self.deserialize = make_job_deserializer(True, lambda: self.backend.signing_key)
        self.state = WorkerState(self.backend)
        self.loop = asyncio.new_event_loop()
        self.client = self.loop.run_until_complete(self._client())
        self.sync = redis.Redis.from_url(url)

    async def _client(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(self.url)

    def letters(self) -> int:
        return int(self.sync.hlen("pacificpy:dlq"))

    def feed(self, raw: bytes) -> None:
        job = self.deserialize(raw)  # must never raise
        assert isinstance(job["f"], str) and isinstance(job["a"], (list, tuple))
        assert isinstance(job["k"], dict) and (job["t"] is None or type(job["t"]) is int)
        assert type(job["et"]) is int and 0 <= job["et"] < 253_402_300_800_000
        if job["f"] != JOB_NAME:  # a job of ARQ's own for another function: ARQ's to run
            assert raw.startswith(b"{")
            return
        before = self.letters()
        ctx = {"redis": self.client, "job_id": uuid.uuid4().hex, "job_try": 1}
        retried = False
        try:
            self.loop.run_until_complete(self.state.run(ctx, *job["a"], **job["k"]))
        except ArqRetry:
            retried = True
        assert_one_end(self.letters() - before, raw, retried=retried)

    def close(self) -> None:
        self.loop.run_until_complete(self.state.on_shutdown({}))
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()
        self.sync.close()


@pytest.fixture
def arq_rig(fuzz_url: str, tmp_path: Path) -> Iterator[ArqRig]:
    rig = ArqRig(fuzz_url, tmp_path)
    yield rig
    rig.close()


@FUZZ
@given(raw=st.one_of(wire_messages, arq_jobs(), not_messages.map(orjson.dumps)))
def test_arq_worker_path(arq_rig: ArqRig, raw: bytes) -> None:
    arq_rig.feed(raw)


@FUZZ
@given(value=not_messages)
def test_arq_job_function_given_a_non_message(arq_rig: ArqRig, value: Any) -> None:
    """What a user's own job deserializer may hand the job function."""
    before = arq_rig.letters()
    ctx = {"redis": arq_rig.client, "job_id": uuid.uuid4().hex, "job_try": 1}
    arq_rig.loop.run_until_complete(arq_rig.state.run(ctx, value))
    assert_one_end(arq_rig.letters() - before, value)


class Planted:
    """Unpickling this creates ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def test_arq_worker_path_never_unpickles_a_raw_job(arq_rig: ArqRig) -> None:
    planted = arq_rig.tmp / "planted"
    arq_rig.feed(pickle.dumps({"f": JOB_NAME, "a": [Planted(planted)], "k": {}}))
    arq_rig.feed(pickle.dumps(Planted(planted)))
    assert not planted.exists()


@pytest.fixture
def celery_backend(fuzz_url: str) -> Iterator[CeleryBackgroundBackend]:
    backend = CeleryBackgroundBackend(celery_app=Celery("fuzz", broker=fuzz_url))
    configure_background_tasks(backend, signing_key=SIGNING_KEY)
    yield backend
    backend.shutdown_sync()


@FUZZ
@given(value=st.one_of(wire_messages.map(lambda b: b.decode("utf-8", "replace")), not_messages))
def test_celery_worker_path(celery_backend: CeleryBackgroundBackend, value: Any) -> None:
    """The body of every PacificPy Celery task, handed what a Celery message can carry."""
    store = celery_backend.state.sync
    before = store.hlen("pacificpy:dlq"), celery_backend.queue_length_sync("default")
    try:
        deliver(celery_backend, value)
    except Reject as exc:  # would send the message back to the queue
        raise AssertionError(f"message sent back: {exc!r}") from None
    letters = store.hlen("pacificpy:dlq") - before[0]
    published = celery_backend.queue_length_sync("default") - before[1]
    assert published in (0, 1)
    assert_one_end(letters, value, retried=published == 1)


# -- end to end: a fixed sample on each real backend ---------------------------------------
SAMPLE = 20


def fuzzed_sample(keys: list[str], seed: int) -> list[bytes]:
    """One fuzzed message per key; each is a mutation of a valid ``count(key)`` message."""
    rng = random.Random(seed)
    out: list[bytes] = []
    for i, key in enumerate(keys):
        body = body_of(tasks.count.name, [key])
        good = sign(orjson.dumps(body))
        kind = i % 8
        if kind == 0:
            out.append(good)  # unchanged: runs
        elif kind == 1:
            out.append(good[: rng.randrange(20, len(good))])
        elif kind == 2:
            flips = [(rng.randrange(len(good)), rng.randrange(8)) for _ in range(rng.randint(1, 3))]
            out.append(flip(good, flips))
        elif kind == 3:
            # A field of the wrong type on a call that cannot run: its idempotency key would
            # be released after the dead letter was kept.
            field, value = [("ik", 7), ("n", True), ("tr", {"x": 2}), ("pid", [1])][i // 8]
            unbound = body_of(tasks.count.name, [key, "extra"], **{field: value})
            out.append(sign(orjson.dumps(unbound)))
        elif kind == 4:
            out.append(key.encode() + rng.randbytes(rng.randrange(1, 300)))
        elif kind == 5:
            out.append(sign(orjson.dumps(body_of(tasks.count.name, [key], pad="x" * 500_000))))
        elif kind == 6:
            depth = rng.choice([50, 600, 2000])
            raw = orjson.dumps(body_of(tasks.count.name, [key]))
            out.append(sign(raw.replace(b'"k":{}', b'"k":{},"deep":' + nested(depth))))
        else:
            # ARQ's own job format around a good message, with an enqueue time ARQ cannot use.
            job = {"f": JOB_NAME, "a": [good.decode()], "et": rng.choice(["soon", 10**18])}
            out.append(orjson.dumps(job))
    return out


async def test_fuzzed_messages_on_every_backend(rig: Harness, counter: redis.Redis) -> None:
    """Each planted message runs once or is exactly one dead letter; none loops."""
    assert rig.backend is not None
    keys = _support.new_keys(SAMPLE, f"fuzz-{rig.name}")
    sample = fuzzed_sample(keys, seed=11)
    texts = [m.decode("utf-8", "replace") for m in sample]
    for data in sample:
        rig.inject_raw(rig.backend, data, "default")

    async def ends() -> list[tuple[int, int]]:
        assert rig.backend is not None
        runs = _support.read_counts(counter, keys)
        letters = await rig.backend.dead_letters(limit=10_000)
        found = [sum(d.data == text for d in letters) for text in texts]
        return list(zip(runs, found, strict=True))

    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if all(runs + letters >= 1 for runs, letters in await ends()):
            break
        await asyncio.sleep(0.1)
    # Round trips through the workers after the sample: anything sent back would show again.
    for i in range(2):
        handle = await tasks.add.delay(i, 40)
        assert await handle.result(timeout=WAIT) == i + 40
    final = await ends()
    bad = [(i, sample[i][:60], end) for i, end in enumerate(final) if end not in {(1, 0), (0, 1)}]
    assert not bad, bad
    assert sum(runs for runs, _ in final) >= 1  # the unchanged messages ran
