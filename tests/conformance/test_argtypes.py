"""SPEC §10.1 on every backend: arguments arrive as the types their parameters declare, or
the call is refused at the call site, named by the parameter."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest

from pacificpy.background import _codec
from pacificpy.background.task import TaskEnvelope
from pacificpy.errors import TaskSerializationError
from tests.conformance import tasks
from tests.conformance.harness import SIGNING_KEY, Harness

WAIT = 30.0

WHEN = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
IDENT = uuid.UUID("12345678-1234-5678-1234-567812345678")
POSITIONAL = (WHEN, IDENT, Decimal("1.50"), tasks.Color.BLUE, tasks.Point(3, 2.5))


def _expected(**values: Any) -> dict[str, list[str]]:
    return {name: [type(v).__name__, repr(v)] for name, v in values.items()}


async def test_typed_arguments_arrive_as_declared(harness: Harness) -> None:
    extra: dict[str, Any] = {
        "day": dt.date(2024, 2, 29),
        "ids": [uuid.UUID(int=1), uuid.UUID(int=2)],
        "pair": (7, "seven"),
        "order": tasks.Order(placed=dt.date(2024, 1, 31), lines=[Decimal("0.10"), Decimal("2")]),
    }
    handle = await tasks.typed_args.delay(*POSITIONAL, **extra)
    seen = await handle.result(timeout=WAIT)
    names = ["when", "ident", "amount", "color", "point"]
    assert seen == _expected(**dict(zip(names, POSITIONAL, strict=True)), **extra)


async def test_typed_arguments_arrive_as_declared_in_async_task(harness: Harness) -> None:
    handle = await tasks.async_typed_args.delay(*POSITIONAL)
    seen = await handle.result(timeout=WAIT)
    names = ["when", "ident", "amount", "color", "point"]
    assert seen == _expected(**dict(zip(names, POSITIONAL, strict=True)))


async def test_json_forms_convert_to_the_declared_type(harness: Harness) -> None:
    # A caller may pass the JSON form of a declared type: the task still gets the type.
    handle = await tasks.typed_args.delay(
        WHEN.isoformat(), str(IDENT), "1.50", "blue", {"x": 3, "y": 2.5}, pair=[7, "seven"]
    )
    seen = await handle.result(timeout=WAIT)
    assert seen["when"] == ["datetime", repr(WHEN)]
    assert seen["ident"] == ["UUID", repr(IDENT)]
    assert seen["color"] == ["Color", repr(tasks.Color.BLUE)]
    assert seen["point"] == ["Point", repr(tasks.Point(3, 2.5))]
    assert seen["pair"] == ["tuple", repr((7, "seven"))]


async def test_type_json_would_change_is_refused_naming_the_parameter(
    harness: Harness,
) -> None:
    cases: list[tuple[Any, str]] = [
        (WHEN, "would arrive in the task as a str"),
        (IDENT, "would arrive in the task as a str"),
        (tasks.Color.RED, "would arrive in the task as a str"),
        (tasks.Point(1, 2.0), "would arrive in the task as a dict"),
        ((1, 2), "would arrive in the task as a list"),
        (Decimal("1.5"), "cannot be serialized"),
        ({"nested": [WHEN]}, "holds a datetime"),
    ]
    for value, problem in cases:
        with pytest.raises(TaskSerializationError) as info:
            tasks.echo.delay(value)  # echo(value: Any) declares none of these
        assert info.value.argument == "value", str(info.value)
        assert "argument value " in str(info.value) and problem in str(info.value)
    with pytest.raises(TaskSerializationError) as info:
        tasks.typed_args.delay("not a date", *POSITIONAL[1:])
    assert info.value.argument == "when"
    assert "datetime" in str(info.value)
    with pytest.raises(TaskSerializationError) as info:
        tasks.typed_args.delay(*POSITIONAL, ids=["not-a-uuid"])
    assert info.value.argument == "ids"


async def test_value_that_does_not_convert_in_the_worker_is_a_dead_letter(
    harness: Harness,
) -> None:
    # Not made by .delay() (which refuses it): a signed message whose `when` is no date.
    backend = harness.backend
    assert backend is not None
    wire = ("yesterday", str(IDENT), "1.50", "blue", {"x": 3, "y": 2.5})
    env = TaskEnvelope(uuid.uuid4().hex, tasks.typed_args.name, wire, {})
    harness.inject_raw(backend, _codec.encode(env, signing_key=SIGNING_KEY), "default")
    deadline = time.monotonic() + WAIT
    letter = None
    while letter is None and time.monotonic() < deadline:
        letter = next(
            (d for d in await backend.dead_letters(limit=1000) if d.task_id == env.task_id), None
        )
        if letter is None:
            await asyncio.sleep(0.05)
    assert letter is not None, "no dead letter for the unconvertible message"
    assert letter.reason == "rejected"
    assert "argument when" in letter.error and "datetime" in letter.error
    handle = await tasks.add.delay(1, 2)  # the worker is unharmed
    assert await handle.result(timeout=WAIT) == 3
