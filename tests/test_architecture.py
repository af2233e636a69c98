"""The package layering, read from the source with ``ast`` (docs/architecture.md).

- ``pacificpy.background`` (the task layer) imports neither ``pacificpy.app`` nor the web
  layer ``pacificpy.web``: not at top level, not inside a function, not for type checking.
- ``pacificpy.cli`` does not import ``pacificpy.web``: the CLI shows the task layer's
  data with the task layer's helpers, not the dashboard's views.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "pacificpy"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module an ``import from`` names (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    # A package's own __init__ counts as level 1; a module's package is one part up.
    drop = node.level - 1 if is_package else node.level
    base = base[: len(base) - drop]
    return ".".join([*base, node.module] if node.module else base)


def imported_modules(path: Path, root: Path = SRC) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports, anywhere in it, with the line: ``import a.b``,
    ``from a import b`` (as ``a`` and ``a.b``), relative imports, and
    ``importlib.import_module("a.b")`` / ``__import__("a.b")`` with a literal name."""
    module = _module_name(path, root)
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node, module, is_package)
            yield node.lineno, target
            for alias in node.names:
                yield node.lineno, f"{target}.{alias.name}"
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0]
            if (
                name in ("import_module", "__import__")
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                yield node.lineno, first.value


def _is_in(name: str, forbidden: tuple[str, ...]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in forbidden)


def forbidden_imports(package: str, forbidden: tuple[str, ...]) -> list[str]:
    """``file:line imports name`` for every import under ``package`` of a ``forbidden``
    module or one of its submodules."""
    found = []
    for path in sorted((PACKAGE / package).rglob("*.py")):
        for line, name in imported_modules(path):
            if _is_in(name, forbidden):
                found.append(f"{path.relative_to(SRC)}:{line} imports {name}")
    return found


def test_the_task_layer_imports_neither_the_app_nor_the_web_layer() -> None:
    assert forbidden_imports("background", ("pacificpy.app", "pacificpy.web")) == []


def test_the_cli_does_not_import_the_web_layer() -> None:
    assert forbidden_imports("cli", ("pacificpy.web",)) == []


LAYERS = ("pacificpy.app", "pacificpy.web")


@pytest.mark.parametrize(
    ("where", "source", "expected"),
    [
        ("background/x.py", "import pacificpy.app", True),
        ("background/x.py", "from pacificpy.app import PacificPy", True),
        ("background/x.py", "from pacificpy import web", True),
        ("background/x.py", "def f():\n    from pacificpy.web.dashboard import x", True),
        ("background/x.py", "if TYPE_CHECKING:\n    from pacificpy.app import A", True),
        ("background/backends/x.py", "from ...web import dashboard", True),
        ("background/x.py", "from .. import app", True),
        ("background/__init__.py", "from .. import app", True),
        ("background/__init__.py", "from . import app", False),
        ("cli/x.py", "import importlib\nimportlib.import_module('pacificpy.web')", True),
        ("background/x.py", "from pacificpy.application import x", False),
        ("background/x.py", "from pacificpy.background import web_hooks", False),
    ],
)
def test_the_scan_sees_every_form_of_import(
    tmp_path: Path, where: str, source: str, expected: bool
) -> None:
    """The checker itself: each form of import is seen, and a look-alike name is not."""
    path = tmp_path / "pacificpy" / where
    path.parent.mkdir(parents=True)
    path.write_text(source)
    names = [name for _, name in imported_modules(path, root=tmp_path)]
    assert any(_is_in(name, LAYERS) for name in names) is expected, names
