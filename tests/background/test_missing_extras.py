"""Without the celery or arq extra, the backends are importable and constructing one raises
``BackendNotAvailable`` naming the ``pip install`` to run (SPEC §7); ``pacificpy worker``
prints that message, not a traceback.

Nothing is uninstalled: a subprocess Python marks the extra's packages as missing
(``sys.modules[name] = None`` makes ``import name`` fail) before importing PacificPy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: The top-level packages each extra brings in.
HIDDEN = {"celery": ("celery", "kombu", "billiard"), "arq": ("arq",)}
CLASSES = {"celery": "CeleryBackgroundBackend", "arq": "ARQBackgroundBackend"}


def _python(code: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")) if p
    )
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _hide(extra: str) -> str:
    return f"import sys\nfor _n in {HIDDEN[extra]!r}:\n    sys.modules[_n] = None\n"


@pytest.mark.parametrize("extra", ["celery", "arq"])
def test_constructing_a_backend_without_its_extra(extra: str) -> None:
    cls = CLASSES[extra]
    code = _hide(extra) + textwrap.dedent(f"""
        import pacificpy.background.backend as backend_module
        from pacificpy.background.backend import {cls}
        from pacificpy.errors import BackendNotAvailable
        try:
            {cls}()
        except BackendNotAvailable as exc:
            print("RAISED", type(exc).__name__)
            print(exc)
        else:
            print("NOT RAISED")
        """)
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert "RAISED BackendNotAvailable" in result.stdout
    assert f"pip install -e '.[{extra}]' in your clone of PacificPy" in result.stdout
    assert cls in result.stdout


def test_the_real_backends_still_load_with_the_extras() -> None:
    from pacificpy.background import backend as backend_module
    from pacificpy.background.backends.arq_backend import ARQBackgroundBackend
    from pacificpy.background.backends.celery_backend import CeleryBackgroundBackend

    assert backend_module.ARQBackgroundBackend is ARQBackgroundBackend
    assert backend_module.CeleryBackgroundBackend is CeleryBackgroundBackend


@pytest.mark.parametrize("extra", ["celery", "arq"])
def test_worker_command_prints_the_pip_line(extra: str, tmp_path: Path) -> None:
    cls = CLASSES[extra]
    (tmp_path / "extraless_app.py").write_text(
        textwrap.dedent(f"""
            from pacificpy.background.backend import {cls}
            from pacificpy.background.decorators import configure_background_tasks

            configure_background_tasks({cls}())
            """)
    )
    code = _hide(extra) + "from pacificpy.cli import main\nmain()\n"
    result = _python(code, "worker", "extraless_app", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"pip install -e '.[{extra}]' in your clone of PacificPy" in result.stderr
    assert cls in result.stderr
