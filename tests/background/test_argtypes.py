"""Typed task arguments (SPEC §10.1) on the local executor: what converts, what is refused
at the call site and how it is named, and what the worker does with a value that does not
convert."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import pydantic
import pytest

from pacificpy.background import _codec
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import LocalExecutor, get_local_executor
from pacificpy.background.task import TaskEnvelope
from pacificpy.errors import TaskFailed, TaskSerializationError
from pacificpy.testing import eager_tasks

KEY = b"test-argtypes-signing-key-0123456789"


class Size(enum.IntEnum):
    S = 1
    L = 3


@dataclasses.dataclass
class Line:
    sku: str
    price: Decimal
    when: dt.datetime


class Customer(pydantic.BaseModel):
    id: uuid.UUID
    joined: dt.date


def _types(*values: Any) -> list[str]:
    return [type(v).__name__ for v in values]


@background
def containers(
    ids: list[uuid.UUID],
    prices: dict[str, Decimal],
    by_size: dict[Size, int],
    pair: tuple[int, str],
    tags: set[str],
    maybe: dt.datetime | None = None,
) -> list[Any]:
    return [
        _types(*ids), _types(*prices.values()), _types(*by_size), type(pair).__name__,
        type(tags).__name__, type(maybe).__name__, (ids, prices, by_size, pair, tags, maybe),
    ]  # fmt: skip


@background
async def nested(line: Line, customers: list[Customer], at: dt.time) -> list[Any]:
    return [type(line.price).__name__, type(line.when).__name__, line, customers, at]


@background
def star(prefix: str, *ids: uuid.UUID, **stamps: dt.datetime) -> list[Any]:
    return [prefix, ids, stamps]


@background
def loose(a, payload: dict[str, Any], *rest, **more) -> None:  # type: ignore[no-untyped-def]
    """Unannotated or plainly annotated parameters: only JSON-native values."""


@background
def forward(item: LaterDefined) -> str:
    return type(item).__name__


@background
def unresolvable(when: NoSuchName) -> Any:  # type: ignore[name-defined]  # noqa: F821
    return when


@background(serializer="pickle")
def pickled(pair: Any) -> str:
    return type(pair).__name__


@background
def measure(x: float) -> float:
    return x


@dataclasses.dataclass(frozen=True)
class LaterDefined:
    """Declared after the task that names it: the plan is made at first call."""

    n: int


@pytest.fixture
def executor() -> Iterator[LocalExecutor]:
    ex = get_local_executor(max_workers=2, allow_pickle=True)
    configure_background_tasks(ex, signing_key=KEY)
    yield ex
    ex.shutdown_sync(timeout=5)


def test_containers_of_rich_types_arrive_as_declared(executor: LocalExecutor) -> None:
    ids = [uuid.uuid4(), uuid.uuid4()]
    prices = {"a": Decimal("0.10"), "b": Decimal("12.345")}
    by_size = {Size.S: 2, Size.L: 1}
    when = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    got = containers.delay(ids, prices, by_size, (1, "x"), {"t"}, when).result_sync(timeout=10)
    assert got[:6] == [
        ["UUID", "UUID"], ["Decimal", "Decimal"], ["Size", "Size"], "tuple", "set", "datetime",
    ]  # fmt: skip
    assert got[6] == (ids, prices, by_size, (1, "x"), {"t"}, when)
    assert containers.delay(ids, prices, by_size, (1, "x"), set()).result_sync(timeout=10)[5] == (
        "NoneType"
    )


def test_dataclass_model_and_time_arrive_as_declared_in_async_task(
    executor: LocalExecutor,
) -> None:
    line = Line("sku-1", Decimal("9.99"), dt.datetime(2024, 1, 1, 12))
    people = [Customer(id=uuid.uuid4(), joined=dt.date(2020, 2, 29))]
    got = nested.delay(line, people, dt.time(8, 30)).result_sync(timeout=10)
    assert got == ["Decimal", "datetime", line, people, dt.time(8, 30)]


def test_message_carries_json_and_the_task_gets_the_type(executor: LocalExecutor) -> None:
    ident = uuid.uuid4()
    env = TaskEnvelope("wire-1", star.name, ("p", str(ident)), {"at": "2024-01-01T00:00:00Z"})
    body = orjson.loads(_codec.encode(env))
    assert (body["a"], body["k"]) == (["p", str(ident)], {"at": "2024-01-01T00:00:00Z"})
    executor.submit_raw(_codec.encode(env, signing_key=KEY))
    got = executor.wait_result_sync("wire-1", timeout=10).unwrap("wire-1")
    at = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    assert got == ["p", (ident,), {"at": at}]


def test_star_parameters_convert_each_item(executor: LocalExecutor) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    at = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    handle = star.delay("p", a, b, first=at)
    assert handle.result_sync(timeout=10) == ["p", (a, b), {"first": at}]


def test_refused_at_call_site_named_by_parameter(executor: LocalExecutor) -> None:
    cases: list[tuple[tuple[Any, ...], dict[str, Any], str, str]] = [
        ((dt.datetime.now(), {}), {}, "a", "would arrive in the task as a str"),
        ((1, {"k": uuid.uuid4()}), {}, "payload", "holds a UUID which would arrive"),
        ((1, {"k": (1, 2)}), {}, "payload", "holds a tuple which would arrive"),
        ((1, {}, "ok", Size.S), {}, "rest[1]", "would arrive in the task as a int"),
        ((1, {}), {"extra": Decimal("1")}, "extra", "cannot be serialized"),
        ((1,), {"payload": {2: "non-str key"}}, "payload", "cannot be serialized"),
        ((Line("s", Decimal(1), dt.datetime.now()), {}), {}, "a", "cannot be serialized"),
        ((LaterDefined(1), {}), {}, "a", "would arrive in the task as a dict"),
    ]
    for args, kwargs, name, problem in cases:
        with pytest.raises(TaskSerializationError) as info:
            loose.delay(*args, **kwargs)
        assert info.value.argument == name, str(info.value)
        message = str(info.value)
        assert f"argument {name} " in message and problem in message, message
        assert "annotate the parameter" in message or "cannot be serialized" in message
    with pytest.raises(TaskSerializationError, match="pass plain data") as info:
        loose.delay(object(), {})
    assert "annotate" not in str(info.value)  # no annotation would carry an object


def test_value_its_annotation_rejects_is_refused(executor: LocalExecutor) -> None:
    with pytest.raises(TaskSerializationError) as info:
        star.delay("p", uuid.uuid4(), "not-a-uuid")
    assert info.value.argument == "ids[1]"
    with pytest.raises(TaskSerializationError) as info:
        star.delay("p", late="tomorrow")
    assert info.value.argument == "late"
    assert "datetime" in str(info.value)
    with pytest.raises(TaskSerializationError) as info:
        nested.delay({"sku": "s", "price": "x", "when": "2024-01-01T00:00:00"}, [], "08:00")
    assert info.value.argument == "line"
    with pytest.raises(TaskSerializationError) as info:
        nested.delay(Line("s", Decimal(1), dt.datetime.now()), [{"id": "nope"}], "08:00")
    assert info.value.argument == "customers"
    assert executor.queue_length_sync() == 0


def test_annotation_resolved_at_first_call(executor: LocalExecutor) -> None:
    assert forward.delay(LaterDefined(1)).result_sync(timeout=10) == "LaterDefined"


def test_unresolvable_annotation_counts_as_none(executor: LocalExecutor) -> None:
    assert unresolvable.delay("plain").result_sync(timeout=10) == "plain"
    with pytest.raises(TaskSerializationError) as info:
        unresolvable.delay(dt.datetime.now())
    assert info.value.argument == "when"


def test_pickle_task_is_left_alone(executor: LocalExecutor) -> None:
    assert pickled.delay((1, 2)).result_sync(timeout=10) == "tuple"


def test_non_finite_float_named_by_parameter(executor: LocalExecutor) -> None:
    for value in (math.nan, math.inf):
        with pytest.raises(TaskSerializationError, match="NaN or infinite") as info:
            measure.delay(value)
        assert info.value.argument == "x"
    with pytest.raises(TaskSerializationError) as info:
        loose.delay(1, {"deep": [math.inf]})
    assert info.value.argument == "payload"


def test_unconvertible_message_is_a_dead_letter(executor: LocalExecutor) -> None:
    env = TaskEnvelope("bad-when-1", star.name, ("p",), {"at": "not a time"})
    executor.submit_raw(_codec.encode(env, signing_key=KEY))
    with pytest.raises(TaskFailed, match="argument at"):
        executor.wait_result_sync("bad-when-1", timeout=10).unwrap("bad-when-1")
    (letter,) = executor.dead_letters_sync()
    assert letter.reason == "rejected" and letter.attempts == 1
    assert "argument at" in letter.error and "datetime" in letter.error
    assert star.delay("still", uuid.UUID(int=5)).result_sync(timeout=10) == [
        "still",
        (uuid.UUID(int=5),),
        {},
    ]


def test_eager_tasks_convert_too() -> None:
    ident = uuid.uuid4()
    with eager_tasks():
        assert star.delay("e", ident).result_sync(timeout=0) == ["e", (ident,), {}]
        with pytest.raises(TaskSerializationError):
            loose.delay(ident, {})
