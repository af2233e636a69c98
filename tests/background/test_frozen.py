"""``quick_init``: frozen dataclasses built through a plain twin behave as frozen ones."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from pacificpy.background._frozen import quick_init
from pacificpy.background.task import TaskContext, TaskEnvelope


@quick_init
@dataclasses.dataclass(frozen=True, slots=True)
class Point:
    x: int
    y: int = 0
    tags: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, slots=True)
class Labelled(Point):
    label: str = ""


def test_an_instance_is_of_the_frozen_class_with_its_fields_and_defaults() -> None:
    p = Point(1)
    assert type(p) is Point and (p.x, p.y, p.tags) == (1, 0, [])
    assert Point(1).tags is not p.tags  # a default factory runs per instance
    assert Point(x=2, y=3) == Point(2, 3) and Point(2, 3) != Point(2, 4)
    ctx = TaskContext("id", "name", 1, "q", 1.5, None)
    assert hash(ctx) == hash(TaskContext("id", "name", 1, "q", 1.5, None))
    assert repr(Point(1, 2)) == "Point(x=1, y=2, tags=[])"


def test_a_field_cannot_be_set_and_replace_builds_a_new_one() -> None:
    p = Point(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 5  # type: ignore[misc]
    q = dataclasses.replace(p, y=7)
    assert (q.x, q.y, type(q)) == (1, 7, Point) and p.y == 0


def test_copies_and_pickles_round_trip() -> None:
    p = Point(1, 2, ["a"])
    assert copy.copy(p) == p and copy.deepcopy(p) == p
    assert pickle.loads(pickle.dumps(p)) == p


def test_missing_or_unknown_arguments_fail_as_for_any_dataclass() -> None:
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Point(1, z=2)  # type: ignore[call-arg]


def test_a_subclass_is_built_by_its_own_init() -> None:
    item = Labelled(1, 2, [], "a")
    assert type(item) is Labelled and (item.x, item.label) == (1, "a")
    assert copy.copy(item) == item and pickle.loads(pickle.dumps(item)).label == "a"


def test_only_a_frozen_slotted_dataclass_is_accepted() -> None:
    @dataclasses.dataclass(slots=True)
    class Plain:
        x: int

    with pytest.raises(TypeError, match="frozen, slotted"):
        quick_init(Plain)


def test_the_hot_path_classes_use_it() -> None:
    env = TaskEnvelope("id", "name", (1,), {"a": 1}, "q", 2, 1.5)
    assert type(env) is TaskEnvelope and env.next_attempt().attempt == 3
    ctx = TaskContext("id", "name", 1, "q", 1.5, None)
    assert type(ctx) is TaskContext and ctx.run is None
    for cls in (TaskEnvelope, TaskContext):
        assert cls.__init__ is object.__init__
