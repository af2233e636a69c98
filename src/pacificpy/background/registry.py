"""Task name -> ``TaskSpec``: how a worker finds the function a message names."""

from __future__ import annotations

from collections.abc import Callable

from pacificpy.background import config
from pacificpy.background.task import TaskSpec
from pacificpy.errors import ConfigurationError, TaskNotFound

__all__ = ["all_specs", "clear", "get", "names", "register", "subscribe", "unsubscribe"]

# Declared tasks: filled as modules are imported, so no reset_all() forgets them.
_tasks: dict[str, TaskSpec] = {}
# Who hears of each task declared (a configured Celery backend); reset with the rest.
_listeners: list[Callable[[TaskSpec], None]] = []


@config.resets(__name__, "_listeners")
def _drop_listeners() -> None:
    _listeners.clear()


def _same_function(a: TaskSpec, b: TaskSpec) -> bool:
    # A module imported twice (as __main__ and by name, or reloaded) declares "the same"
    # function again: same qualified name and same code location. That is not a clash.
    fa, fb = a.fn, b.fn
    return fa is fb or (
        getattr(fa, "__qualname__", None) == getattr(fb, "__qualname__", None)
        and getattr(fa, "__code__", None) is not None
        and fa.__code__.co_filename == fb.__code__.co_filename
        and fa.__code__.co_firstlineno == fb.__code__.co_firstlineno
    )


def register(spec: TaskSpec) -> None:
    """Add ``spec`` under its name.

    Raises:
        ConfigurationError: a different function already uses that name.
    """
    existing = _tasks.get(spec.name)
    if existing is not None and not _same_function(existing, spec):
        raise ConfigurationError(
            f"two different functions are named {spec.name!r} as tasks "
            f"({existing.fn!r} and {spec.fn!r}); pass @background(name=...) to tell them apart"
        )
    _tasks[spec.name] = spec
    for listener in list(_listeners):
        listener(spec)


def subscribe(listener: Callable[[TaskSpec], None]) -> None:
    """Call ``listener`` for every task registered so far and every one registered later.

    Backends that must announce tasks to their transport (Celery) use this, so a task
    may be declared before or after ``configure_background_tasks``. Subscribing a
    listener already subscribed does nothing.
    """
    if listener in _listeners:
        return
    _listeners.append(listener)
    for spec in list(_tasks.values()):
        listener(spec)


def unsubscribe(listener: Callable[[TaskSpec], None]) -> None:
    """Stop calling ``listener``."""
    if listener in _listeners:
        _listeners.remove(listener)


def get(name: str) -> TaskSpec:
    """The spec registered under ``name``.

    Raises:
        TaskNotFound: nothing is registered under that name in this process.
    """
    try:
        return _tasks[name]
    except KeyError:
        raise TaskNotFound(name) from None


def names() -> list[str]:
    """Every registered task name, sorted."""
    return sorted(_tasks)


def all_specs() -> list[TaskSpec]:
    """Every registered spec (backends register them with their transport)."""
    return list(_tasks.values())


def clear() -> None:
    """Forget every task (tests)."""
    _tasks.clear()
