"""The error hierarchy of SPEC §7 and §9: one root, fixed relations, three import paths."""

from __future__ import annotations

import pickle

import pytest

import pacificpy
import pacificpy.background
import pacificpy.errors
from pacificpy.errors import (
    BackendNotAvailable,
    EnqueueError,
    PacificPyError,
    QueueFull,
    Retry,
    TaskArgumentError,
    TaskFailed,
    TaskSerializationError,
    TaskTimeout,
)

#: Every class SPEC §7 names (plus ConfigurationError, §9's mount-time error).
SPEC_ERRORS = [
    "PacificPyError",
    "TaskArgumentError",
    "TaskSerializationError",
    "EnqueueError",
    "QueueFull",
    "TaskTimeout",
    "TaskFailed",
    "BackendNotAvailable",
    "Retry",
    "ConfigurationError",
]


@pytest.mark.parametrize("name", SPEC_ERRORS)
def test_every_error_is_importable_from_the_three_paths(name: str) -> None:
    cls = getattr(pacificpy.errors, name)
    assert getattr(pacificpy, name) is cls
    assert getattr(pacificpy.background, name) is cls
    assert name in pacificpy.errors.__all__
    assert name in pacificpy.__all__
    assert name in pacificpy.background.__all__


@pytest.mark.parametrize("name", SPEC_ERRORS)
def test_every_error_is_a_pacificpy_error(name: str) -> None:
    cls = getattr(pacificpy.errors, name)
    assert isinstance(cls, type) and issubclass(cls, Exception)
    assert issubclass(cls, PacificPyError)


def test_everything_exported_by_errors_is_in_the_tree() -> None:
    for name in pacificpy.errors.__all__:
        cls = getattr(pacificpy.errors, name)
        assert issubclass(cls, PacificPyError), name
        assert getattr(pacificpy, name) is cls
        assert getattr(pacificpy.background, name) is cls


def test_fixed_relations() -> None:
    assert issubclass(TaskTimeout, TaskFailed)
    assert issubclass(QueueFull, EnqueueError)
    assert not issubclass(TaskFailed, TaskTimeout)
    assert not issubclass(Retry, TaskFailed)
    # A caller's ``except TaskFailed`` catches a timeout as well.
    with pytest.raises(TaskFailed):
        raise TaskTimeout("task t ran past its timeout of 1s", task_id="t")


def test_call_site_errors_are_also_type_errors() -> None:
    # Bad arguments are TypeErrors, as a direct call with them would raise.
    assert issubclass(TaskArgumentError, TypeError)
    assert issubclass(TaskSerializationError, TypeError)


def test_enqueue_error_carries_the_cause_and_says_what_to_do() -> None:
    cause = ConnectionRefusedError(111, "Connection refused")
    err = EnqueueError.of(
        "app.send", "abc123", cause, where="on ARQ at 127.0.0.1:1/0", hint="Is Redis running?"
    )
    assert err.cause is cause
    assert err.task_name == "app.send" and err.task_id == "abc123"
    message = str(err)
    for part in ("app.send", "abc123", "127.0.0.1:1/0", "ConnectionRefusedError", "Is Redis"):
        assert part in message, message
    assert isinstance(BackendNotAvailable("install pacificpy[arq]"), PacificPyError)


def test_task_failed_carries_the_remote_error() -> None:
    err = TaskTimeout("late", task_id="t1", task_name="n", error_type="TaskTimeout", attempts=3)
    assert (err.task_id, err.task_name, err.error_type, err.attempts) == (
        "t1",
        "n",
        "TaskTimeout",
        3,
    )


def test_retry_survives_pickling_with_its_countdown() -> None:
    again = pickle.loads(pickle.dumps(Retry(countdown=2.5, reason="rate limited")))
    assert isinstance(again, Retry)
    assert again.countdown == 2.5
    assert again.reason == "rate limited"
