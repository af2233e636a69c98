"""Typed task arguments: what each parameter's annotation asks of the JSON in between.

JSON carries ``str``, ``int``, ``float``, ``bool``, ``None``, lists and str-keyed dicts
unchanged; anything else changes type on the way (a ``datetime`` arrives as a ``str``, a
tuple as a list). A parameter annotated with a richer type (``datetime``, ``UUID``,
``Decimal``, an ``Enum``, a dataclass, ``tuple[...]``, a pydantic model, containers of
them) gets its value encoded at the call site and converted back to that type in the
worker, by msgspec (pydantic for models). A value JSON would change under a parameter
that does not declare its type is refused at the call site, named by the parameter.

The plan is computed once per task, at its first call; a task whose parameters are all
plain pays one type check per argument.
"""

from __future__ import annotations

import inspect
import sys
import typing
from collections.abc import Callable
from typing import Any

import msgspec
import msgspec.inspect as mi
import orjson

from pacificpy.errors import TaskArgumentError, TaskSerializationError

__all__ = ["ArgPlan"]

#: Values JSON carries as they are (an exact type check: subclasses change on the way).
_SCALARS = frozenset({str, int, float, bool, type(None)})
_PLAIN_NODES = (mi.AnyType, mi.NoneType, mi.BoolType, mi.IntType, mi.FloatType, mi.StrType)
_PLAIN = "pass plain data (str, int, float, bool, None, list, dict with str keys)"


class _Converter:
    """Encode a value for the wire under one annotation, and convert it back."""

    __slots__ = ("annotation", "text")

    def __init__(self, annotation: Any) -> None:
        self.annotation = annotation
        self.text = inspect.formatannotation(annotation)

    def dump(self, value: Any) -> Any:
        raise NotImplementedError

    def load(self, wire: Any) -> Any:
        raise NotImplementedError


class _Msgspec(_Converter):
    __slots__ = ()

    def dump(self, value: Any) -> Any:
        wire = msgspec.to_builtins(value, str_keys=True)
        msgspec.convert(wire, self.annotation, strict=False)  # what the worker will do
        return wire

    def load(self, wire: Any) -> Any:
        return msgspec.convert(wire, self.annotation, strict=False)


class _Pydantic(_Converter):
    __slots__ = ("adapter",)

    def __init__(self, annotation: Any) -> None:
        super().__init__(annotation)
        from pydantic import TypeAdapter  # only reached when a model is in the annotation

        self.adapter: Any = TypeAdapter(annotation)

    def dump(self, value: Any) -> Any:
        return self.adapter.dump_python(self.adapter.validate_python(value), mode="json")

    def load(self, wire: Any) -> Any:
        return self.adapter.validate_python(wire)


def _is_model(cls: Any) -> bool:
    # A pydantic model cannot exist unless pydantic was imported: no import needed here.
    pydantic = sys.modules.get("pydantic")
    base = getattr(pydantic, "BaseModel", None)
    return base is not None and isinstance(cls, type) and issubclass(cls, base)


_RANK = {"plain": 0, "rich": 1, "pydantic": 2, "unsupported": 3}


def _kind(node: Any, seen: set[int]) -> str:
    """``plain`` (JSON keeps it), ``rich`` (msgspec converts), ``pydantic`` or ``unsupported``."""
    if id(node) in seen:
        return "plain"
    seen.add(id(node))
    if isinstance(node, mi.CustomType):
        if node.cls is object:
            return "plain"
        return "pydantic" if _is_model(node.cls) else "unsupported"
    if isinstance(node, (*_PLAIN_NODES, mi.ListType, mi.UnionType)):
        kind = "plain"
    elif isinstance(node, mi.DictType):
        plain_key = isinstance(node.key_type, (mi.AnyType, mi.StrType))
        kind = "plain" if plain_key else "rich"
    else:
        kind = "rich"
    for child in _children(node):
        found = _kind(child, seen)
        if _RANK[found] > _RANK[kind]:
            kind = found
    return kind


def _children(node: Any) -> list[Any]:
    out: list[Any] = []
    if not isinstance(node, msgspec.Struct):
        return out
    for value in msgspec.structs.astuple(node):
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if isinstance(item, mi.Field):
                out.append(item.type)
            elif isinstance(item, msgspec.Struct):
                out.append(item)
    return out


def _converter(annotation: Any) -> _Converter | None:
    """The converter a parameter annotated ``annotation`` needs; None when JSON suffices
    or when neither msgspec nor pydantic can convert to it (the value must then be plain)."""
    if annotation is inspect.Parameter.empty:
        return None
    try:
        kind = _kind(mi.type_info(annotation), set())
        if kind == "rich":
            return _Msgspec(annotation)
        if kind == "pydantic":
            return _Pydantic(annotation)
    except Exception:  # msgspec or pydantic cannot handle this annotation
        return None
    return None


def _hints(fn: Callable[..., Any], signature: inspect.Signature) -> dict[str, Any]:
    """Resolved annotations; if some cannot be resolved, only those that are not strings."""
    try:
        return typing.get_type_hints(fn)
    except Exception:
        return {
            name: p.annotation
            for name, p in signature.parameters.items()
            if not isinstance(p.annotation, str)
        }


def _native(value: Any) -> bool:
    """Whether JSON gives ``value`` back as it is (same types all the way down)."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is list:
        return all(_native(v) for v in value)
    if kind is dict:
        return all(type(k) is str and _native(v) for k, v in value.items())
    return False


def _offender(value: Any) -> Any:
    """The outermost part of ``value`` JSON would change (``value`` itself, or inside it)."""
    kind = type(value)
    if kind is list:
        for v in value:
            if not _native(v):
                return _offender(v)
    elif kind is dict and all(type(k) is str for k in value):
        for v in value.values():
            if not _native(v):
                return _offender(v)
    return value


class ArgPlan:
    """Per task: which parameters convert through their annotation, and their names.

    ``to_wire`` runs at the call site (after the arguments bound), ``from_wire`` in the
    worker just before the function is called; both are identity for a pickle task.
    """

    __slots__ = (
        "_kw",
        "_pos",
        "_pos_names",
        "_var_kw",
        "_var_pos",
        "_var_pos_name",
        "passthrough",
        "task_name",
        "typed",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        signature: inspect.Signature,
        task_name: str,
        serializer: str,
    ) -> None:
        self.task_name = task_name
        self.passthrough = serializer != "json"
        hints = {} if self.passthrough else _hints(fn, signature)
        P = inspect.Parameter
        pos_names: list[str] = []
        pos: list[_Converter | None] = []
        self._kw: dict[str, _Converter | None] = {}
        self._var_pos: _Converter | None = None
        self._var_pos_name: str | None = None
        self._var_kw: _Converter | None = None
        for name, p in signature.parameters.items():
            conv = _converter(hints.get(name, P.empty))
            if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD):
                pos_names.append(name)
                pos.append(conv)
            if p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY):
                self._kw[name] = conv
            elif p.kind is P.VAR_POSITIONAL:
                self._var_pos, self._var_pos_name = conv, name
            elif p.kind is P.VAR_KEYWORD:
                self._var_kw = conv
        self._pos_names = tuple(pos_names)
        self._pos = tuple(pos)
        self.typed = any(
            c is not None for c in (*pos, *self._kw.values(), self._var_pos, self._var_kw)
        )

    # -- naming ------------------------------------------------------------------------------
    def label(self, index: int) -> str:
        """The name of positional argument ``index``: its parameter, or ``items[j]`` of a
        ``*items`` parameter."""
        if index < len(self._pos_names):
            return self._pos_names[index]
        if self._var_pos_name is not None:
            return f"{self._var_pos_name}[{index - len(self._pos_names)}]"
        return f"args[{index}]"

    def _positional(self, index: int) -> _Converter | None:
        return self._pos[index] if index < len(self._pos) else self._var_pos

    def _keyword(self, key: str) -> _Converter | None:
        return self._kw.get(key, self._var_kw)

    # -- call site ---------------------------------------------------------------------------
    def to_wire(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments as JSON will carry them.

        Raises:
            TaskSerializationError: an argument JSON would change under a parameter that
                does not declare its type, or a value its annotation does not accept;
                named by the parameter.
        """
        if self.passthrough:
            return args, kwargs
        if not self.typed and not kwargs:
            for value in args:
                if type(value) not in _SCALARS:
                    break
            else:
                return args, kwargs
        wire = tuple(self._dump(self._positional(i), self.label(i), v) for i, v in enumerate(args))
        return wire, {k: self._dump(self._keyword(k), k, v) for k, v in kwargs.items()}

    def _dump(self, conv: _Converter | None, label: str, value: Any) -> Any:
        if conv is None:
            if not _native(value):
                raise self._refusal(label, value)
            return value
        try:
            return conv.dump(value)
        except Exception as exc:
            raise TaskSerializationError(
                f"task {self.task_name}: argument {label} ({type(value).__name__}) does not "
                f"fit its annotation {conv.text}: {_reason(exc)}",
                task_name=self.task_name,
                argument=label,
            ) from None

    def _refusal(self, label: str, value: Any) -> TaskSerializationError:
        part = _offender(value)
        where = f"argument {label} ({type(value).__name__})"
        if part is not value:
            where += f" holds a {type(part).__name__} which"
        try:
            carried = type(orjson.loads(orjson.dumps(part))).__name__
        except TypeError as exc:
            problem = f"cannot be serialized with 'json': {exc}"
        else:
            problem = f"would arrive in the task as a {carried}"
        try:
            msgspec.to_builtins(part)
        except Exception:  # no annotation would carry it
            hint = f"{_PLAIN} or use serializer='pickle'"
        else:
            hint = (
                "annotate the parameter with the type it takes "
                f"({label.partition('[')[0]}: {type(value).__name__}), {_PLAIN}, "
                "or use serializer='pickle'"
            )
        return TaskSerializationError(
            f"task {self.task_name}: {where} {problem}; {hint}",
            task_name=self.task_name,
            argument=label,
        )

    # -- worker ------------------------------------------------------------------------------
    def from_wire(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The decoded arguments converted to the types their parameters declare.

        Raises:
            TaskArgumentError: a value does not convert (a message not made by ``.delay()``).
        """
        if not self.typed:
            return args, kwargs
        out = tuple(self._load(self._positional(i), i, v) for i, v in enumerate(args))
        return out, {k: self._load(self._keyword(k), k, v) for k, v in kwargs.items()}

    def _load(self, conv: _Converter | None, where: int | str, wire: Any) -> Any:
        if conv is None:
            return wire
        try:
            return conv.load(wire)
        except Exception as exc:
            label = self.label(where) if isinstance(where, int) else where
            raise TaskArgumentError(
                f"task {self.task_name}: argument {label} does not convert to its annotation "
                f"{conv.text}: {_reason(exc)}",
                task_name=self.task_name,
            ) from None


def _reason(exc: Exception) -> str:
    text = str(exc).strip().replace("\n", " ")
    return text[:300] or type(exc).__name__
