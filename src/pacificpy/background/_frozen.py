"""Frozen dataclasses that are as cheap to build as plain ones.

A frozen dataclass's ``__init__`` sets every field through ``object.__setattr__`` (its
own ``__setattr__`` refuses), which makes building one several times slower than a
plain slotted class: about 2 µs for the twelve fields of a ``TaskEnvelope``, built once
per task. :func:`quick_init` keeps the class frozen and everything dataclasses give it
(equality, hash, ``replace``, ``fields``, the refusal to set a field), and builds an
instance as a plain slotted twin with the same fields, then gives it the frozen class:
the two have the same slots, so the object is laid out alike either way.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["quick_init"]

C = TypeVar("C")


def quick_init(cls: type[C]) -> type[C]:
    """Build instances of ``cls`` (a frozen, slotted dataclass) through a plain twin.

    Subclasses are built as dataclasses build them (their own ``__init__``).
    """
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen, slotted dataclass")
    spec = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        default: Any = dataclasses.field(init=f.init)
        if f.default is not dataclasses.MISSING:
            default = dataclasses.field(default=f.default, init=f.init)
        elif f.default_factory is not dataclasses.MISSING:
            default = dataclasses.field(default_factory=f.default_factory, init=f.init)
        spec.append((f.name, f.type, default))
    twin = dataclasses.make_dataclass(
        f"_{cls.__name__}Draft", spec, slots=True, eq=False, repr=False
    )
    if twin.__slots__ != cls.__slots__:  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__} has slots of its own beyond its fields")

    def __new__(klass: type[C], *args: Any, **kwargs: Any) -> C:
        if klass is not cls:  # a subclass: built by its own __init__
            return object.__new__(klass)
        obj = twin(*args, **kwargs)  # (a missing or unknown argument raises TypeError)
        obj.__class__ = cls
        return obj  # type: ignore[no-any-return]

    def __reduce__(self: Any) -> tuple[Any, ...]:
        # Copies and pickles are built by a call, as anywhere else (not by __new__ alone).
        fields = dataclasses.fields(self)
        return (type(self), tuple(getattr(self, f.name) for f in fields if f.init))

    cls.__new__ = __new__  # type: ignore[method-assign,assignment]
    # Nothing is left to do after __new__ (object's __init__ ignores the arguments of a
    # class with a __new__ of its own). A subclass must have an __init__ of its own,
    # which a dataclass subclass has.
    cls.__init__ = object.__init__  # type: ignore[method-assign]
    cls.__reduce__ = __reduce__  # type: ignore[method-assign]
    return cls
