"""Every install line a user reads installs this code: the from-the-clone form
(``pip install -e '.[extra]'``), never ``pip install 'pacificpy[...]'``, which outside the
clone installs an unrelated project of that name. And the ``testing`` extra holds what a
user's first test needs."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]

# "pip install" and what follows it on the line (code, prose or an error message).
PIP_INSTALL = re.compile(r"pip install[ \t]+[^\s`\"][^\n`\"]*")
FROM_THE_CLONE = re.compile(r"^ -e '\.(\[[a-z,{}]+\])?'")


def _read_by_users() -> list[Path]:
    return [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "src").rglob("*.py")),
    ]


def _install_lines() -> list[tuple[str, str]]:
    found = []
    for path in _read_by_users():
        text = path.read_text(encoding="utf-8")
        for match in PIP_INSTALL.finditer(text):
            found.append((str(path.relative_to(ROOT)), match.group(0)))
    return found


def test_every_install_line_installs_from_the_clone() -> None:
    lines = _install_lines()
    assert any(path == "README.md" for path, _ in lines)  # the README says how to install
    wrong = [
        (path, line) for path, line in lines if not FROM_THE_CLONE.match(line[len("pip install") :])
    ]
    assert not wrong, wrong
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "pip install -e '.[all]'" in readme


def test_no_page_names_the_registry_form() -> None:
    for path in _read_by_users():
        text = path.read_text(encoding="utf-8")
        assert "'pacificpy[" not in text and '"pacificpy[' not in text, path


def test_the_testing_extra_holds_what_a_first_test_needs() -> None:
    testing = {Requirement(r).name for r in EXTRAS["testing"]}
    assert {"httpx2", "pytest-asyncio", "pytest"} <= testing
    # The suite's extra installs it too, in the same one pip command.
    (own,) = [Requirement(r) for r in EXTRAS["test"] if Requirement(r).name == "pacificpy"]
    assert {"all", "testing"} <= own.extras
