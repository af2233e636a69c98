"""Envelope <-> bytes: JSON (orjson) by default, pickle on request, HMAC signing optional.

Wire format: an unsigned message is a JSON object. A signed one is
``b"pp1." + hex(HMAC-SHA256(key, body)) + b"." + body``. With a pickled task the
arguments travel as base64 in ``"p"`` and the JSON ``"a"``/``"k"`` fields are empty.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import pickle
from typing import Any

import orjson

from pacificpy.background import registry
from pacificpy.background.task import TaskEnvelope
from pacificpy.errors import MessageRejected, TaskSerializationError

__all__ = ["SERIALIZERS", "decode", "encode"]

SERIALIZERS = frozenset({"json", "pickle"})
_SIGNED = b"pp1."
_SIG_LEN = 64  # hex digits of SHA-256
_MAX_DEPTH = 254  # the deepest nesting orjson writes


def encode(
    env: TaskEnvelope,
    *,
    signing_key: bytes | None = None,
    max_payload_bytes: int | None = None,
) -> bytes:
    """Encode ``env`` for the wire.

    Raises:
        TaskSerializationError: an argument cannot be carried, naming it; or the message
            is larger than ``max_payload_bytes``.
    """
    body: dict[str, Any] = {
        "v": 1,
        "id": env.task_id,
        "t": env.task_name,
        "q": env.queue,
        "n": env.attempt,
        "ts": env.enqueued_at,
    }
    if env.parent_id is not None:
        body["pid"] = env.parent_id
    if env.idempotency_key is not None:
        body["ik"] = env.idempotency_key
    if env.trace:
        body["tr"] = env.trace
    if env.priority:
        body["pr"] = env.priority
    if env.serializer == "pickle":
        body["s"] = "pickle"
        try:
            blob = pickle.dumps((env.args, env.kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise _which_argument(env, lambda v: pickle.dumps(v), exc) from None
        body["p"] = base64.b64encode(blob).decode("ascii")
        body["a"] = []
        body["k"] = {}
    else:
        body["a"] = env.args
        body["k"] = env.kwargs
    try:
        data = orjson.dumps(body)
    except TypeError as exc:
        raise _which_argument(env, orjson.dumps, exc) from None
    # orjson writes NaN and ±Infinity as null: the task would get None instead of the value.
    # Only a message with a null in it can hold one, so the scan is skipped almost always.
    if b"null" in data and env.serializer == "json":
        bad = _non_finite(env)
        if bad is not None:
            raise TaskSerializationError(
                f"task {env.task_name}: argument {bad} is NaN or infinite, which JSON cannot "
                "carry; pass it as a string or use serializer='pickle'",
                task_name=env.task_name,
                argument=bad,
            )
    if signing_key is not None:
        sig = hmac.new(signing_key, data, hashlib.sha256).hexdigest().encode("ascii")
        data = _SIGNED + sig + b"." + data
    else:
        # orjson's bytes keep its whole working buffer (about 4 KiB) however short the
        # JSON: a queue of 100,000 local messages held 400 MB. An exact-size copy is cheap.
        data = memoryview(data).tobytes()
    if max_payload_bytes is not None and len(data) > max_payload_bytes:
        raise TaskSerializationError(
            f"task {env.task_name}: message is {len(data)} bytes, over max_payload_bytes="
            f"{max_payload_bytes}; pass a reference (an id, a path) instead of the data",
            task_name=env.task_name,
        )
    return data


def decode(
    data: bytes | str,
    *,
    signing_key: bytes | None = None,
    allow_pickle: bool = False,
) -> TaskEnvelope:
    """Decode and verify a message.

    With ``signing_key`` set, the signature is checked before anything else is read, so
    nothing of an unverified message is ever unpickled. Every field's type is checked: a
    message that decodes is one a worker can run or dead-letter without tripping on it.

    Raises:
        MessageRejected: not bytes, garbage, the wrong shape or a field of the wrong type,
            a missing or bad signature while ``signing_key`` is set, or pickle while
            ``allow_pickle`` is off.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    elif isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    elif not isinstance(data, bytes):
        raise MessageRejected(f"message is a {type(data).__name__}, not bytes or text")
    if data.startswith(_SIGNED):
        sig = data[len(_SIGNED) : len(_SIGNED) + _SIG_LEN]
        if data[len(_SIGNED) + _SIG_LEN : len(_SIGNED) + _SIG_LEN + 1] != b".":
            raise MessageRejected("message has a malformed signature")
        body = data[len(_SIGNED) + _SIG_LEN + 1 :]
        if signing_key is not None:
            good = hmac.new(signing_key, body, hashlib.sha256).hexdigest().encode("ascii")
            if not hmac.compare_digest(sig, good):
                raise MessageRejected("message signature does not match: altered or forged")
    else:
        if signing_key is not None:
            raise MessageRejected("message is not signed but this worker requires signing")
        body = data
    # From here on the body is verified (or no key is configured: every producer trusted).
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MessageRejected(f"message is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("v") != 1:
        raise MessageRejected("message has the wrong shape: not a PacificPy v1 task message")
    # orjson reads JSON nested 1,024 deep but writes only 254: a deeper message cannot come
    # from a producer, and its dead letter or next attempt could not be written. Only a
    # body with that many brackets can be that deep, so the check is almost always skipped.
    if body.count(b"[") + body.count(b"{") > _MAX_DEPTH:
        try:
            orjson.dumps(raw)
        except TypeError:
            raise MessageRejected(
                f"message is nested deeper than the {_MAX_DEPTH} levels JSON messages may have"
            ) from None
    try:
        return _envelope(raw, allow_pickle)
    except MessageRejected:
        raise
    except Exception as exc:
        raise MessageRejected(f"message has the wrong shape: {exc}") from None


def _envelope(raw: dict[str, Any], allow_pickle: bool) -> TaskEnvelope:
    """The envelope of a verified v1 message; ``TypeError`` names the first bad field."""
    task_id = raw.get("id")
    name = raw.get("t")
    if not (isinstance(task_id, str) and isinstance(name, str)):
        raise TypeError("id and task name must be strings")
    args = raw.get("a", [])
    kwargs = raw.get("k", {})
    if not (isinstance(args, list) and isinstance(kwargs, dict)):
        raise TypeError("arguments must be a list and a mapping")
    queue = _field(raw, "q", str, "default")
    attempt = raw.get("n", 1)
    if type(attempt) is not int or attempt < 1:
        raise TypeError(f"attempt (n) must be an integer of at least 1, not {attempt!r:.40}")
    enqueued_at = raw.get("ts", 0.0)
    if type(enqueued_at) not in (int, float) or not math.isfinite(enqueued_at):
        raise TypeError(f"enqueue time (ts) must be a finite number, not {enqueued_at!r:.40}")
    parent_id = _field(raw, "pid", str, None)
    idempotency_key = _field(raw, "ik", str, None)
    trace = raw.get("tr")
    if trace is not None and not (
        isinstance(trace, dict)
        and all(isinstance(v, str) for v in trace.values())  # keys: JSON's are str
    ):
        raise TypeError("trace context (tr) must map strings to strings")
    priority = raw.get("pr", 0)
    if type(priority) is not int or not 0 <= priority <= 9:
        raise TypeError(f"priority (pr) must be an integer from 0 to 9, not {priority!r:.40}")
    serializer = raw.get("s", "json")
    if serializer == "pickle":
        if not allow_pickle:
            raise MessageRejected(
                f"task {name} {task_id}: pickled message refused; build the backend "
                "with allow_pickle=True to accept pickle"
            )
        blob = raw.get("p")
        if not isinstance(blob, str):
            raise TypeError("pickled arguments (p) must be a base64 string")
        # Only reached once decode() verified the signature, when a key is configured.
        loaded = pickle.loads(base64.b64decode(blob, validate=True))
        if not (isinstance(loaded, tuple) and len(loaded) == 2):
            raise TypeError("pickled arguments must be an (args, kwargs) pair")
        args, kwargs = loaded
        if not (isinstance(args, (tuple, list)) and isinstance(kwargs, dict)):
            raise TypeError("pickled arguments must be a sequence and a mapping")
        if not all(isinstance(k, str) for k in kwargs):
            raise TypeError("keyword argument names must be strings")
    elif serializer != "json":
        raise TypeError(f"unknown serializer {serializer!r:.40}")
    return TaskEnvelope(
        task_id=task_id,
        task_name=name,
        args=tuple(args),
        kwargs=kwargs,
        queue=queue,
        attempt=attempt,
        enqueued_at=float(enqueued_at),
        parent_id=parent_id,
        serializer=serializer,
        idempotency_key=idempotency_key,
        trace=trace,
        priority=priority,
    )


def _field(raw: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    """``raw[key]`` if it is a ``kind`` (or absent: ``default``); else ``TypeError``."""
    value = raw.get(key, default)
    if value is not default and not isinstance(value, kind):
        raise TypeError(f"field {key!r} must be a {kind.__name__}, not {type(value).__name__}")
    return value


def peek_body(data: bytes | str) -> dict[str, Any] | None:
    """Best-effort JSON body of a message that may not decode (nothing is verified)."""
    try:
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        if data.startswith(_SIGNED):
            data = data[len(_SIGNED) + _SIG_LEN + 1 :]
        raw = orjson.loads(data)
    except Exception:
        return None
    return raw if isinstance(raw, dict) else None


def peek(data: bytes | str) -> tuple[str | None, str | None]:
    """Best-effort ``(task_id, task_name)`` of a message that may not decode."""
    raw = peek_body(data)
    if raw is None:
        return None, None
    tid, name = raw.get("id"), raw.get("t")
    return (tid if isinstance(tid, str) else None, name if isinstance(name, str) else None)


def _labeller(env: TaskEnvelope) -> Any:
    """Names positional arguments by their parameters, when the task is registered here."""
    try:
        return registry.get(env.task_name).plan.label
    except Exception:
        return lambda i: f"args[{i}]"


def _non_finite(env: TaskEnvelope) -> str | None:
    """The name of the first argument holding a NaN or infinite float, if any."""

    def holds(value: Any) -> bool:
        if isinstance(value, float):
            return not math.isfinite(value)
        if isinstance(value, (list, tuple)):
            return any(holds(v) for v in value)
        if isinstance(value, dict):
            return any(holds(v) for v in value.values())
        return False

    label = _labeller(env)
    for i, value in enumerate(env.args):
        if holds(value):
            return str(label(i))
    for key, value in env.kwargs.items():
        if holds(value):
            return key
    return None


def _which_argument(env: TaskEnvelope, dump: Any, exc: Exception) -> TaskSerializationError:
    """Find the first argument ``dump`` cannot carry, for a message that names it."""
    label = _labeller(env)
    candidates: list[tuple[str, Any]] = [(str(label(i)), v) for i, v in enumerate(env.args)]
    candidates += [(k, v) for k, v in env.kwargs.items()]
    for name, value in candidates:
        try:
            dump(value)
        except Exception as inner:
            what = f"argument {name} ({type(value).__name__})"
            return TaskSerializationError(
                f"task {env.task_name}: {what} cannot be serialized with "
                f"{env.serializer!r}: {inner}. Pass plain data (str, int, float, bool, None, "
                "list, dict) or use serializer='pickle'",
                task_name=env.task_name,
                argument=name,
            )
    return TaskSerializationError(
        f"task {env.task_name}: arguments cannot be serialized with {env.serializer!r}: {exc}",
        task_name=env.task_name,
    )
