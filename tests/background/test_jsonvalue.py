"""dumps_value: every value becomes JSON, converted where JSON cannot carry it as it is."""

from __future__ import annotations

from typing import Any

import orjson

from pacificpy.background._jsonvalue import dumps_value


def test_keys_json_has_no_form_for_become_their_text() -> None:
    # orjson refuses a tuple key even with OPT_NON_STR_KEYS; the json module too.
    assert orjson.loads(dumps_value({(1, 2): "a", 3: "b"})) == {"(1, 2)": "a", "3": "b"}


def test_what_only_the_json_module_writes_keeps_its_value() -> None:
    # An int past 64 bits sends the value down the rebuilt path: the rest converts as before.
    value = {"big": 2**70, "set": {1}, "bytes": b"ok", "keys": {1: "a"}, "t": (1, 2)}
    assert orjson.loads(dumps_value(value)) == {
        "big": 2**70, "set": [1], "bytes": "ok", "keys": {"1": "a"}, "t": [1, 2]
    }  # fmt: skip


def test_a_container_holding_itself_is_cut_where_it_repeats() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    mapping: dict[str, Any] = {"n": 1}
    mapping["self"] = mapping
    assert orjson.loads(dumps_value({"l": loop, "m": mapping})) == {
        "l": [1, "[1, [...]]"], "m": {"n": 1, "self": "{'n': 1, 'self': {...}}"}
    }  # fmt: skip


def test_a_container_met_twice_side_by_side_is_no_cycle() -> None:
    shared = [1, 2]
    big = 2**70  # forces the rebuilt path
    assert orjson.loads(dumps_value([shared, shared, big])) == [[1, 2], [1, 2], big]


def test_nesting_past_the_recursion_limit_is_cut_to_text() -> None:
    outer: list[Any] = []
    inner = outer
    for _ in range(5000):
        inner.append([])
        inner = inner[0]
    out = orjson.loads(dumps_value(outer))
    depth = 0
    while isinstance(out, list):
        out, depth = out[0], depth + 1
    assert out == "[[...]]" and depth == 100


class _Broken:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_an_object_whose_repr_raises_is_named() -> None:
    assert orjson.loads(dumps_value({"x": _Broken()})) == {"x": "<unrepresentable _Broken>"}
