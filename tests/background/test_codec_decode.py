"""What a worker accepts from the wire: every field of a message is type-checked at decode,
and nothing of a message is unpickled before its signature was verified."""

from __future__ import annotations

import base64
import hashlib
import hmac
import pickle
from pathlib import Path
from typing import Any

import orjson
import pytest

from pacificpy.background import _codec
from pacificpy.background.task import TaskEnvelope
from pacificpy.errors import MessageRejected

KEY = b"codec-decode-test-signing-key-0123456789"


class Plant:
    """Unpickling this creates ``path``: proof that a payload was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def sign(body: bytes, key: bytes = KEY) -> bytes:
    return b"pp1." + hmac.new(key, body, hashlib.sha256).hexdigest().encode() + b"." + body


def message(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "v": 1, "id": "t1", "t": "some.task", "q": "default", "n": 1, "ts": 1.5, "a": [1],
        "k": {},
    }  # fmt: skip
    base.update(fields)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


def test_a_well_formed_message_decodes() -> None:
    env = _codec.decode(
        sign(orjson.dumps(message(pid="p", ik="key", tr={"traceparent": "00-ab"}))),
        signing_key=KEY,
    )
    assert (env.task_id, env.task_name, env.args, env.queue, env.attempt) == (
        "t1", "some.task", (1,), "default", 1,
    )  # fmt: skip
    assert (env.parent_id, env.idempotency_key, env.trace) == ("p", "key", {"traceparent": "00-ab"})
    # Optional fields may be left out or null where the format allows it.
    minimal = {"v": 1, "id": "t2", "t": "x"}
    env = _codec.decode(orjson.dumps(minimal))
    assert (env.queue, env.attempt, env.enqueued_at, env.args, env.kwargs) == (
        "default", 1, 0.0, (), {},
    )  # fmt: skip
    env = _codec.decode(orjson.dumps(message(pid=None, ik=None, tr=None)))
    assert env.parent_id is env.idempotency_key is env.trace is None


BAD_FIELDS: list[tuple[str, Any]] = [
    ("q", 5),
    ("q", None),
    ("q", ["default"]),
    ("n", "2"),
    ("n", 2.0),
    ("n", True),
    ("n", 0),
    ("n", -3),
    ("n", None),
    ("ts", "now"),
    ("ts", True),
    ("ts", None),
    ("ts", [1.0]),
    ("pid", 7),
    ("pid", {}),
    ("ik", 5),
    ("ik", ["k"]),
    ("ik", False),
    ("tr", "traceparent"),
    ("tr", ["x"]),
    ("tr", {"traceparent": 5}),
    ("tr", {"traceparent": None}),
    ("s", 1),
    ("s", "yaml"),
    ("s", None),
    ("id", 5),
    ("t", None),
    ("a", "12"),
    ("a", {"x": 1}),
    ("k", [1]),
]


@pytest.mark.parametrize(("field", "value"), BAD_FIELDS)
def test_a_field_of_the_wrong_type_is_rejected(field: str, value: Any) -> None:
    body = orjson.dumps(message(**{field: value}))
    with pytest.raises(MessageRejected, match="wrong shape"):
        _codec.decode(sign(body), signing_key=KEY)
    with pytest.raises(MessageRejected, match="wrong shape"):
        _codec.decode(body)


@pytest.mark.parametrize("p", [None, 5, ["x"], "not base64 !!", base64.b64encode(b"junk").decode()])
def test_bad_pickled_arguments_are_rejected(p: Any) -> None:
    body = orjson.dumps(message(s="pickle", p=p, a=[], k={}))
    with pytest.raises(MessageRejected, match="wrong shape"):
        _codec.decode(sign(body), signing_key=KEY, allow_pickle=True)


@pytest.mark.parametrize(
    "payload", [[1, 2], ((1,),), ((1,), {1: "x"}), ("ab", {}), ((), [])], ids=repr
)
def test_pickled_arguments_of_the_wrong_shape_are_rejected(payload: Any) -> None:
    p = base64.b64encode(pickle.dumps(payload)).decode()
    body = orjson.dumps(message(s="pickle", p=p, a=[], k={}))
    with pytest.raises(MessageRejected, match="wrong shape"):
        _codec.decode(sign(body), signing_key=KEY, allow_pickle=True)


def test_nothing_is_unpickled_before_the_signature_is_verified(tmp_path: Path) -> None:
    planted = tmp_path / "unpickled"
    p = base64.b64encode(pickle.dumps(((Plant(planted),), {}))).decode()
    body = orjson.dumps(message(s="pickle", p=p, a=[], k={}))
    forged = [
        sign(body, key=b"some-other-key-0123456789abcdef"),  # signed, by someone else
        body,  # not signed at all
        b"pp1." + b"0" * 64 + b"." + body,  # a signature of zeros
        b"pp1." + hmac.new(KEY, body, hashlib.sha256).hexdigest().encode() + b"x" + body,
    ]
    for data in forged:
        with pytest.raises(MessageRejected):
            _codec.decode(data, signing_key=KEY, allow_pickle=True)
        assert not planted.exists(), data[:80]
    # The same payload, correctly signed, is loaded: the signature is what lets it in.
    _codec.decode(sign(body), signing_key=KEY, allow_pickle=True)
    assert planted.exists()


def test_a_pickled_envelope_round_trips_with_a_key() -> None:
    env = TaskEnvelope("t9", "x.y", ((1, 2), {3}), {"z": b"b"}, serializer="pickle")
    back = _codec.decode(_codec.encode(env, signing_key=KEY), signing_key=KEY, allow_pickle=True)
    assert back.args == ((1, 2), {3})
    assert back.kwargs == {"z": b"b"}


@pytest.mark.parametrize("data", [None, 5, 1.5, ["pp1."], {"v": 1}, object()], ids=repr)
def test_a_message_that_is_not_bytes_is_rejected(data: Any) -> None:
    with pytest.raises(MessageRejected, match="not bytes"):
        _codec.decode(data, signing_key=KEY)
    with pytest.raises(MessageRejected, match="not bytes"):
        _codec.decode(data)
    assert _codec.peek(data) == (None, None)


def test_bytearray_and_memoryview_decode_like_bytes() -> None:
    data = orjson.dumps(message())
    assert _codec.decode(bytearray(data)).task_id == "t1"
    assert _codec.decode(memoryview(data)).task_id == "t1"


def test_nesting_deeper_than_a_producer_can_write_is_rejected() -> None:
    """orjson reads 1,024 levels but writes 254: a deeper message's dead letter or next
    attempt could not be stored, so it is rejected at decode."""

    def deep(depth: int) -> bytes:
        return b'{"v":1,"id":"d","t":"x","a":[' + b"[" * depth + b"]" * depth + b"]}"

    env = _codec.decode(sign(deep(252)), signing_key=KEY)
    orjson.dumps(list(env.args))
    for depth in (253, 1000):
        with pytest.raises(MessageRejected, match="nested deeper"):
            _codec.decode(sign(deep(depth)), signing_key=KEY)
    # Brackets inside strings are not nesting.
    text = orjson.dumps({"v": 1, "id": "s", "t": "x", "a": ["[" * 5000]})
    assert _codec.decode(text).args == ("[" * 5000,)
