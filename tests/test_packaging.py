"""What pyproject.toml promises: dependency floors past published advisories, a build that works."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import orjson
import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())

# The first release of each dependency past its published advisories (see pyproject.toml).
FIXED_IN = {
    "orjson": "3.11.5",  # CVE-2024-27454 (loads) and CVE-2025-67221 (dumps): unbounded recursion
    "starlette": "1.3.1",  # CVE-2025-62727 ... CVE-2026-54283
}


def _requirement(name: str) -> Requirement:
    for line in PYPROJECT["project"]["dependencies"]:
        req = Requirement(line)
        if req.name == name:
            return req
    raise AssertionError(f"{name} is not a dependency")


def _floor(req: Requirement) -> Version:
    floors = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
    assert floors, f"{req} has no lower bound"
    return max(floors)


@pytest.mark.parametrize("name", sorted(FIXED_IN))
def test_dependency_floor_is_past_its_advisories(name: str) -> None:
    req = _requirement(name)
    assert _floor(req) >= Version(FIXED_IN[name]), f"{req} admits a version with an advisory"
    assert req.specifier.contains(version(name)), f"installed {name} does not satisfy {req}"


def test_setuptools_floor_builds_an_spdx_license_string() -> None:
    """``license = "MIT"`` (PEP 639) needs setuptools 77; an older floor fails to build."""
    assert isinstance(PYPROJECT["project"]["license"], str)
    (req,) = [Requirement(r) for r in PYPROJECT["build-system"]["requires"] if "setuptools" in r]
    assert _floor(req) >= Version("77")


def test_orjson_refuses_deep_nesting_instead_of_overflowing_the_stack() -> None:
    """The codec and the HTTP layer rely on this limit for hostile input."""
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(b"[" * 100_000 + b"]" * 100_000)
    nested: list[object] = []
    for _ in range(10_000):
        nested = [nested]
    with pytest.raises(orjson.JSONEncodeError):
        orjson.dumps(nested)
