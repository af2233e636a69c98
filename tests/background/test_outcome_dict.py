"""Outcome.to_dict: the form every store outside the process writes."""

from __future__ import annotations

import dataclasses

import orjson

from pacificpy.background.task import Outcome
from pacificpy.types import TaskStatus


def test_outcome_to_dict_has_every_field_and_round_trips() -> None:
    # ``to_dict`` lists the fields by hand (``asdict`` costs 8 µs an outcome): a field added
    # to Outcome and forgotten there would be lost by every store outside the process.
    @dataclasses.dataclass
    class Point:
        x: int
        tags: list[str]

    outcome = Outcome(TaskStatus.FAILED, {"p": Point(1, ["a"])}, error="boom",
                      error_type="ValueError", traceback="tb", attempts=3,
                      finished_at=12.5)  # fmt: skip
    d = outcome.to_dict()
    assert set(d) == {f.name for f in dataclasses.fields(Outcome)}
    assert d["status"] == "failed"
    # orjson writes a dataclass in the value as asdict would.
    back = Outcome.from_dict(orjson.loads(orjson.dumps(d)))
    assert back == dataclasses.replace(outcome, value={"p": {"x": 1, "tags": ["a"]}})
