"""Import the object a command-line argument such as ``myapp:app`` names."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Any

import click

__all__ = ["LoadError", "load_attr", "load_module", "split_spec"]


class LoadError(click.ClickException):
    """Raised when a ``module:attr`` string names no importable module or attribute."""


def split_spec(spec: str, default_attr: str = "app") -> tuple[str, str]:
    """Split ``"pkg.module:attr"`` into ``("pkg.module", "attr")``, ``attr`` defaulting.

    Raises:
        LoadError: when the module part is empty.
    """
    module_name, _, attr = spec.strip().partition(":")
    if not module_name:
        raise LoadError(f"{spec!r} is not an import string; write it as 'module:attribute'")
    return module_name, attr or default_attr


def load_module(module_name: str) -> ModuleType:
    """Import ``module_name`` with the current directory on ``sys.path``.

    Raises:
        LoadError: when the module (or a package on its path) does not exist. An import
            error raised from inside the module's own code propagates unchanged.
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise LoadError(
                f"could not import module {module_name!r}: no module named {missing!r} "
                f"(looked in {cwd} and on sys.path; run from the directory that holds it)"
            ) from exc
        raise


def load_attr(spec: str, default_attr: str = "app") -> Any:
    """Import ``"pkg.module:attr"`` (or ``"pkg.module"``, meaning ``default_attr``).

    The current working directory is put on ``sys.path`` first, as ``python -m`` would.
    ``attr`` may be dotted (``"myapp:factory.app"``).

    Raises:
        LoadError: when the module cannot be found or has no such attribute.
    """
    module_name, attr = split_spec(spec, default_attr)
    obj: Any = load_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LoadError(
                f"module {module_name!r} has no attribute {attr!r} "
                f"(give it as '{module_name}:<name>')"
            ) from None
    return obj
