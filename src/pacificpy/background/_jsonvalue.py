"""JSON of the values stores keep outside the process: outcomes and job results.

A task's return value is kept as it is by the local executor, but as JSON by every store
outside the process (Redis, PostgreSQL, SQLite, ARQ's job result). A value JSON cannot carry
as it is is converted, never refused, so that a task always ends with an outcome that
``result()`` can read: non-string dict keys become strings, sets and tuples lists, bytes
UTF-8 text (undecodable bytes replaced), an exception ``{"error", "error_type"}``, anything
else its ``repr``. (orjson already writes dataclasses, datetimes, UUIDs and enums.)
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["dumps_value", "value_default"]


def value_default(obj: Any) -> Any:
    """orjson ``default``: the JSON-able form of what orjson cannot write itself."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).decode("utf-8", "replace")
    if isinstance(obj, BaseException):
        return {"error": str(obj), "error_type": type(obj).__name__}
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return repr(obj)


def dumps_value(value: Any) -> bytes:
    """``value`` as JSON bytes, converting what JSON cannot carry as it is (see above)."""
    try:
        return orjson.dumps(value, default=value_default, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # an int past 64 bits, or a lone surrogate: orjson refuses both
        text = json.dumps(value, default=value_default, ensure_ascii=False)
        return text.encode("utf-8", "replace")
