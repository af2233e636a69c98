"""Previews of task arguments and results, with secrets hidden, and the size caps of
everything the monitor, the outcome board and the dead letters keep.

Secrets are hidden by name: a keyword argument, a dict key, or a *positional* argument
whose parameter in the task's signature is named like ``password``, ``token``,
``secret``, ``api_key``... (:func:`is_sensitive`) shows as ``'***'``. The monitor (memory
and Redis stores), the dashboard and Celery's ``argsrepr``/``kwargsrepr`` headers all
render arguments here.
"""

from __future__ import annotations

import inspect
import itertools
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from pacificpy.background import config

__all__ = [
    "ARGSREPR_CHARS",
    "ERROR_CHARS",
    "PREVIEW_CHARS",
    "RESULT_KEEP_BYTES",
    "TRACEBACK_CHARS",
    "approx_size",
    "call_reprs",
    "cap_error",
    "cap_traceback",
    "is_sensitive",
    "preview",
    "preview_call",
]

#: Longest preview of arguments or of a result, in characters.
PREVIEW_CHARS = 200
#: Longest ``argsrepr`` / ``kwargsrepr`` header of a Celery message, in characters.
ARGSREPR_CHARS = 512
#: Longest error message kept (its head), in characters.
ERROR_CHARS = 4 * 1024
#: Longest traceback kept (its tail: the raise site), in characters.
TRACEBACK_CHARS = 16 * 1024
#: Longest line of a traceback kept, in characters.
TRACEBACK_LINE_CHARS = 1024
#: Lines of one exception message kept inside a traceback.
TRACEBACK_MESSAGE_LINES = 20
#: The in-memory monitor keeps a result by reference (rendered when read) only up to this
#: estimated size in bytes; a larger one is rendered as its preview at once and dropped.
RESULT_KEEP_BYTES = 4 * 1024

_SENSITIVE = re.compile(
    r"pass(word|wd|phrase)?|secret|token|authori[sz]ation|api[-_]?key|cookie|credential"
    r"|private[-_]?key|session[-_]?id",
    re.IGNORECASE,
)
_REDACTED = "'***'"


def is_sensitive(key: object) -> bool:
    """True for argument or dict-key names whose values previews must hide."""
    return isinstance(key, str) and _SENSITIVE.search(key) is not None


class _Hidden:
    """Stands in for a hidden value: renders as ``'***'``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return _REDACTED


_HIDDEN = _Hidden()


def _render(value: Any, budget: int, depth: int = 0) -> str:
    """A repr-like rendering that stops near ``budget`` characters and hides secrets."""
    kind = type(value)
    if kind is str:
        return repr(value[: budget + 1])
    if kind in (float, bool) or value is None:
        return repr(value)
    if kind is int:
        try:
            return repr(value)
        except ValueError:  # past sys.get_int_max_str_digits()
            return f"<int of {value.bit_length()} bits>"
    if kind in (bytes, bytearray):
        return repr(bytes(value[: budget + 1]))
    if isinstance(value, Mapping):
        if depth > 4:
            return "{…}"
        parts: list[str] = []
        used = 2
        for k, v in value.items():
            if used >= budget:
                parts.append("…")
                break
            key = _render(k, budget - used, depth + 1)
            text = _REDACTED if is_sensitive(k) else _render(v, budget - used, depth + 1)
            parts.append(f"{key}: {text}")
            used += len(key) + len(text) + 4
        return "{" + ", ".join(parts) + "}"
    if isinstance(value, (list, tuple, set, frozenset)):
        if depth > 4:
            return "[…]"
        open_, close = ("[", "]") if isinstance(value, list) else ("(", ")")
        if isinstance(value, (set, frozenset)):
            open_, close = "{", "}"
        parts = []
        used = 2
        for item in value:
            if used >= budget:
                parts.append("…")
                break
            text = _render(item, budget - used, depth + 1)
            parts.append(text)
            used += len(text) + 2
        if kind is tuple and len(parts) == 1:
            return f"({parts[0]},)"
        return open_ + ", ".join(parts) + close
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {kind.__name__}>"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """A short repr-like text of ``value`` for display, at most ``limit`` characters.

    Large containers and strings are not rendered in full, and the values of dict keys
    named like ``password``, ``token``, ``secret`` or ``authorization`` show as ``'***'``.
    """
    return _cut(_render(value, limit), limit)


# -- binding arguments to the task's signature -------------------------------------------

#: task name -> (the signature it was computed from, per-position "hide" flags, hide extra
#: positionals (``*args`` named like a secret), hide extra keywords (``**kwargs`` likewise),
#: names of the named parameters)
_shapes: dict[str, tuple[inspect.Signature, tuple[bool, ...], bool, bool, frozenset[str]]] = {}


@config.resets(__name__, "_shapes")
def _forget_shapes() -> None:
    _shapes.clear()


def _shape(
    task: str | None,
) -> tuple[inspect.Signature, tuple[bool, ...], bool, bool, frozenset[str]] | None:
    if task is None:
        return None
    # The registry imports this module: found in sys.modules (cheaper than an import
    # statement on every preview), imported only if nothing imported it yet.
    registry: Any = sys.modules.get("pacificpy.background.registry")
    if registry is None:
        from pacificpy.background import registry
    try:
        sig = registry.get(task).signature
    except Exception:  # not registered in this process: keyword names only
        return None
    cached = _shapes.get(task)
    if cached is not None and cached[0] is sig:
        return cached
    positional: list[bool] = []
    var_pos = var_kw = False
    named: set[str] = set()
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional.append(is_sensitive(p.name))
            named.add(p.name)
        elif p.kind is p.VAR_POSITIONAL:
            var_pos = is_sensitive(p.name)
        elif p.kind is p.VAR_KEYWORD:
            var_kw = is_sensitive(p.name)
        else:
            named.add(p.name)
    shape = (sig, tuple(positional), var_pos, var_kw, frozenset(named))
    _shapes[task] = shape
    return shape


def _redacted(
    task: str | None, args: Iterable[Any], kwargs: Mapping[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    """``args`` and ``kwargs`` with every value bound to a secret-named parameter (by the
    task's signature) or passed under a secret-named keyword replaced by ``'***'``."""
    shape = _shape(task)
    out_args = list(args)
    out_kwargs = dict(kwargs)
    if shape is not None:
        _, positional, var_pos, var_kw, named = shape
        n = len(positional)
        for i in range(len(out_args)):
            if positional[i] if i < n else var_pos:
                out_args[i] = _HIDDEN
        if var_kw:
            for key in out_kwargs:
                if key not in named:
                    out_kwargs[key] = _HIDDEN
    for key in out_kwargs:
        if is_sensitive(key):
            out_kwargs[key] = _HIDDEN
    return out_args, out_kwargs


def preview_call(
    args: Iterable[Any],
    kwargs: Mapping[str, Any],
    limit: int = PREVIEW_CHARS,
    *,
    task: str | None = None,
) -> str:
    """The arguments of a call as ``1, 'x', key='value'``, secrets hidden, cut at ``limit``.

    With ``task`` (a registered task's name) the arguments are bound to its signature, so
    a secret passed positionally is hidden too.
    """
    shown_args, shown_kwargs = _redacted(task, args, kwargs)
    parts: list[str] = []
    used = 0
    for arg in shown_args:
        if used >= limit:
            break
        text = _render(arg, limit - used)
        parts.append(text)
        used += len(text) + 2
    for key, value in shown_kwargs.items():
        if used >= limit:
            break
        text = _render(value, limit - used)
        parts.append(f"{key}={text}")
        used += len(key) + len(text) + 3
    return _cut(", ".join(parts), limit)


def call_reprs(
    task: str | None,
    args: Iterable[Any],
    kwargs: Mapping[str, Any],
    limit: int = ARGSREPR_CHARS,
) -> tuple[str, str]:
    """``(args, kwargs)`` previews as Celery's ``argsrepr`` / ``kwargsrepr`` headers show
    them (``['bob', '***']``, ``{'password': '***'}``): the same redaction as
    :func:`preview_call`."""
    shown_args, shown_kwargs = _redacted(task, args, kwargs)
    return _cut(_render(shown_args, limit), limit), _cut(_render(shown_kwargs, limit), limit)


# -- caps ------------------------------------------------------------------------------


def _marker(cut: int) -> str:
    return f"… [{cut} more characters]"


def cap_error(text: str, limit: int = ERROR_CHARS) -> str:
    """``text`` if it fits in ``limit`` characters, else its head and a note of the cut."""
    if len(text) <= limit:
        return text
    keep = limit - len(_marker(len(text)))
    return text[:keep] + _marker(len(text) - keep)


def cap_traceback(text: str, limit: int = TRACEBACK_CHARS) -> str:
    """A traceback cut to at most ``limit`` characters, keeping what locates the error.

    Long lines are cut, and so are long exception messages (more than
    ``TRACEBACK_MESSAGE_LINES`` unindented lines in a row); if that is still too long,
    the *tail* is kept: the innermost frames and the raise site.
    """
    if len(text) <= limit:
        return text
    out: list[str] = []
    run = cut_lines = 0
    for line in text.splitlines():
        if len(line) > TRACEBACK_LINE_CHARS:
            line = cap_error(line, TRACEBACK_LINE_CHARS)
        if line.startswith("  "):  # a frame (File ..., its code, a caret line)
            if cut_lines:
                out.append(f"… [{cut_lines} more lines]")
            run = cut_lines = 0
            out.append(line)
        elif run < TRACEBACK_MESSAGE_LINES:
            run += 1
            out.append(line)
        else:
            cut_lines += 1
    if cut_lines:
        out.append(f"… [{cut_lines} more lines]")
    capped = "\n".join(out) + "\n"
    if len(capped) <= limit:
        return capped
    head = f"… [{len(capped) - limit} characters cut]\n"
    tail = capped[len(capped) - (limit - len(head)) :]
    return head + tail


_SHALLOW = frozenset({float, bool, complex, type(None)})
_MAX_VISITS = 1000
_SAMPLE = 64


def approx_size(value: Any, limit: int = sys.maxsize) -> int:
    """An estimate of the bytes ``value`` holds, cheap for any size.

    Containers are walked (at most ~1000 objects; a container of more than 64 items is
    estimated from its first 64), objects through their ``__dict__``. The walk stops as
    soon as the estimate passes ``limit``.
    """
    sizeof = sys.getsizeof
    total = 0.0
    stack: list[tuple[Any, float]] = [(value, 1.0)]
    visits = 0
    while stack:
        item, weight = stack.pop()
        visits += 1
        kind = type(item)
        if kind is str or kind is bytes:
            total += (49 + len(item)) * weight
            if total > limit:
                break
            continue
        if kind in _SHALLOW:
            total += 32 * weight
            continue
        if kind is int:
            total += sizeof(item) * weight
            continue
        try:
            total += sizeof(item) * weight
        except Exception:
            total += 64 * weight
        if total > limit:
            break
        if visits >= _MAX_VISITS:
            continue
        children: Any
        if kind is dict or (kind is not list and kind is not tuple and isinstance(item, Mapping)):
            n = len(item)
            w = weight * n / _SAMPLE if n > _SAMPLE else weight
            pairs = item.items() if n <= _SAMPLE else itertools.islice(item.items(), _SAMPLE)
            for key, val in pairs:
                if type(key) is str:  # the usual key: counted here, not walked
                    total += (49 + len(key)) * w
                else:
                    stack.append((key, w))
                stack.append((val, w))
            continue
        if kind is list or kind is tuple or isinstance(item, (list, tuple, set, frozenset)):
            children = item
        else:
            attrs = getattr(item, "__dict__", None)
            if type(attrs) is dict:
                stack.append((attrs, weight))
            continue
        n = len(children)
        if n > _SAMPLE:
            w = weight * n / _SAMPLE
            children = itertools.islice(children, _SAMPLE)
        else:
            w = weight
        for child in children:
            stack.append((child, w))
    return int(total)
