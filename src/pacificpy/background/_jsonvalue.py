"""JSON of the values stores keep outside the process: outcomes and job results.

A task's return value is kept as it is by the local executor, but as JSON by every store
outside the process (Redis, PostgreSQL, SQLite, ARQ's job result). A value JSON cannot carry
as it is is converted, never refused, so that a task always ends with an outcome that
``result()`` can read: non-string dict keys become strings, sets and tuples lists, bytes
UTF-8 text (undecodable bytes replaced), an exception ``{"error", "error_type"}``, anything
else its ``repr`` (its type's name if even that fails); a container met again inside
itself, or nested deeper than ``_DEPTH``, becomes a short ``repr`` (``[1, [...]]``).
(orjson already writes dataclasses, datetimes, UUIDs and enums.)
"""

from __future__ import annotations

import json
import reprlib
from typing import Any

import orjson

__all__ = ["dumps_value", "value_default"]

#: Nesting kept when a value has to be rebuilt; deeper containers are shown as text.
_DEPTH = 100
#: Dict keys the json module writes itself (as orjson's ``OPT_NON_STR_KEYS`` does).
_KEYS = (str, int, float, bool, type(None))


def value_default(obj: Any) -> Any:
    """orjson ``default``: the JSON-able form of what orjson cannot write itself."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).decode("utf-8", "replace")
    if isinstance(obj, BaseException):
        return {"error": str(obj), "error_type": type(obj).__name__}
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    try:
        return repr(obj)
    except Exception:  # a broken __repr__ must not cost the task its outcome
        return f"<unrepresentable {type(obj).__name__}>"


def dumps_value(value: Any) -> bytes:
    """``value`` as JSON bytes, converting what JSON cannot carry as it is (see above)."""
    try:
        return orjson.dumps(value, default=value_default, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        # orjson refuses an int past 64 bits, a lone surrogate, a key of another type (a
        # tuple), a container holding itself and nesting past 254 levels: the value is
        # rebuilt from plain containers and written by the json module.
        text = json.dumps(_rebuilt(value, set(), 0), default=value_default, ensure_ascii=False)
        return text.encode("utf-8", "replace")


def _rebuilt(value: Any, inside: set[int], depth: int) -> Any:
    """``value`` with every container copied as a dict or list (keys json can write), and a
    container already ``inside`` (a cycle) or past ``_DEPTH`` as its short ``repr``."""
    if not isinstance(value, (dict, list, tuple, set, frozenset)):
        return value
    if id(value) in inside or depth >= _DEPTH:
        short = reprlib.Repr()  # (a rare path: no module-level instance to keep)
        short.maxlevel = 1
        return short.repr(value)
    inside.add(id(value))
    try:
        if isinstance(value, dict):
            return {
                k if isinstance(k, _KEYS) else str(k): _rebuilt(v, inside, depth + 1)
                for k, v in value.items()
            }
        return [_rebuilt(v, inside, depth + 1) for v in value]
    finally:
        inside.discard(id(value))
