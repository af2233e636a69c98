"""Bad queue content on every backend: garbage, the wrong shape, unknown task, tampered,
forged, pickled. Each becomes a dead letter with a clear reason, no worker dies, and no
task queued around it is lost (counted)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import orjson
import pytest
import redis

from pacificpy.background import _codec
from pacificpy.background.dead_letter import DeadLetter
from pacificpy.background.task import TaskEnvelope
from tests.conformance import tasks
from tests.conformance.harness import SIGNING_KEY, Harness
from tests.reliability import _support

pytestmark = pytest.mark.redis

GOOD = 20
WAIT = 60.0


def signed(name: str, args: list[object], *, key: bytes | None = SIGNING_KEY) -> tuple[str, bytes]:
    env = TaskEnvelope(uuid.uuid4().hex, name, tuple(args), {}, enqueued_at=time.time())
    return env.task_id, _codec.encode(env, signing_key=key)


async def find_letter(
    rig: Harness, match: Callable[[DeadLetter], bool], timeout: float = WAIT
) -> DeadLetter:
    assert rig.backend is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for letter in await rig.backend.dead_letters(limit=1000):
            if match(letter):
                return letter
        await asyncio.sleep(0.05)
    raise AssertionError("the bad message did not reach the dead-letter queue")


async def around_bad_messages(
    rig: Harness, counter: redis.Redis, scenario: str, bad: list[bytes]
) -> _support.Tally:
    """GOOD tasks, the bad messages straight into the queue, GOOD more: all good ones run."""
    assert rig.backend is not None
    keys = _support.new_keys(2 * GOOD, f"queue-{rig.name}")
    for key in keys[:GOOD]:
        await tasks.count.delay(key)
    for data in bad:
        rig.inject_raw(rig.backend, data, "default")
    for key in keys[GOOD:]:
        await tasks.count.delay(key)
    tally = await asyncio.to_thread(_support.wait_counts, counter, keys, timeout=WAIT)
    _support.record(rig.name, scenario, tally, bad_messages=len(bad))
    assert tally.lost == 0, tally.missing
    if rig.name == "local":
        assert tally.duplicated == 0
    # The workers are alive and still take work after the bad messages.
    handle = await tasks.add.delay(40, 2)
    assert await handle.result(timeout=WAIT) == 42
    return tally


async def test_garbage_bytes(rig: Harness, counter: redis.Redis) -> None:
    marker = uuid.uuid4().hex
    bad = [
        b"\x00\xff\xfe garbage " + marker.encode(),
        b"",
        b"pp1." + marker.encode(),  # a signed prefix with no signature or body
        b"\x80\x04\x95" + marker.encode(),  # looks like the start of a pickle
        marker.encode() * 1000,
    ]
    await around_bad_messages(rig, counter, "queue: garbage bytes", bad)
    letter = await find_letter(rig, lambda d: marker in d.data)
    assert letter.reason == "rejected"
    assert letter.requeueable is False


async def test_valid_json_of_the_wrong_shape(rig: Harness, counter: redis.Redis) -> None:
    marker = uuid.uuid4().hex
    shapes: list[object] = [
        [1, 2, 3],
        {"hello": marker},
        {"v": 2, "id": marker + "-v2", "t": tasks.add.name},
        {"v": 1, "id": 5, "t": tasks.add.name, "a": [], "k": {}, "m": marker},
        {"v": 1, "id": marker + "-a", "t": tasks.add.name, "a": "12", "k": {}},
        {"v": 1, "id": marker + "-n", "t": tasks.add.name, "a": [1, 2], "k": {}, "n": "x"},
    ]
    # Signed with the right key, so only the shape is wrong.
    bad = [signed_raw(orjson.dumps(s)) for s in shapes]
    task_id, unbindable = signed(tasks.add.name, ["only one"])
    await around_bad_messages(rig, counter, "queue: valid JSON, wrong shape", [*bad, unbindable])
    letter = await find_letter(rig, lambda d: d.task_id == task_id)
    assert letter.reason == "rejected"
    assert "add" in (letter.error or "")
    for needle in (marker, marker + "-n"):
        await find_letter(rig, lambda d, n=needle: n in d.data)  # type: ignore[misc]


def signed_raw(body: bytes) -> bytes:
    import hashlib
    import hmac

    sig = hmac.new(SIGNING_KEY, body, hashlib.sha256).hexdigest().encode()
    return b"pp1." + sig + b"." + body


async def test_unknown_task_name(rig: Harness, counter: redis.Redis) -> None:
    task_id, data = signed("no.such.module.task", [1])
    await around_bad_messages(rig, counter, "queue: unknown task name", [data])
    letter = await find_letter(rig, lambda d: d.task_id == task_id)
    assert letter.reason == "unknown_task"
    assert "no.such.module.task" in letter.error


async def test_tampered_signature(rig: Harness, counter: redis.Redis) -> None:
    victim = _support.new_keys(2, "tampered")
    _, data = signed(tasks.count.name, [victim[0]])
    tampered = data.replace(victim[0].encode(), victim[1].encode())
    assert tampered != data
    task_id, other = signed(tasks.count.name, [victim[0]], key=b"some-other-key-0123456789abcdef")
    unsigned_id, unsigned = signed(tasks.count.name, [victim[0]], key=None)
    await around_bad_messages(
        rig, counter, "queue: tampered / forged / unsigned", [tampered, other, unsigned]
    )
    for tid in (task_id, unsigned_id):
        letter = await find_letter(rig, lambda d, t=tid: d.task_id == t)  # type: ignore[misc]
        assert letter.reason == "rejected"
        assert letter.requeueable is False
    await find_letter(rig, lambda d: victim[1] in d.data and "signature" in d.error)
    # None of them ran: the counters of both victim keys are untouched.
    assert _support.read_counts(counter, victim) == [0, 0]


async def test_pickle_without_permission(rig: Harness, counter: redis.Redis) -> None:
    key = _support.new_keys(1, "pickled")[0]
    env = TaskEnvelope(uuid.uuid4().hex, tasks.count.name, (key,), {}, serializer="pickle")
    data = _codec.encode(env, signing_key=SIGNING_KEY)
    await around_bad_messages(rig, counter, "queue: pickle without permission", [data])
    letter = await find_letter(rig, lambda d: d.task_id == env.task_id)
    assert letter.reason == "rejected"
    assert "allow_pickle" in letter.error
    assert _support.read_counts(counter, [key]) == [0]


@pytest.mark.parametrize("count", [200])
async def test_flood_of_bad_messages(rig: Harness, counter: redis.Redis, count: int) -> None:
    """Many bad messages in a row: every one is dead-lettered, and the good tasks still run."""
    marker = uuid.uuid4().hex
    bad = [f"garbage {marker} {i}".encode() for i in range(count)]
    await around_bad_messages(rig, counter, f"queue: {count} garbage messages", bad)
    assert rig.backend is not None
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        letters = await rig.backend.dead_letters(limit=10_000)
        if sum(marker in d.data for d in letters) == count:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("not every bad message reached the dead-letter queue")
