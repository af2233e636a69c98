"""An app module written to a temporary directory, imported by the test process (the
producer) and run by a real worker command started in that directory."""

from __future__ import annotations

import importlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from pacificpy.background import registry
from pacificpy.background.decorators import get_backend

ROOT = Path(__file__).resolve().parents[3]

#: How each command's first word is run when the virtualenv has no script of that name.
_FALLBACK = {
    "celery": [sys.executable, "-m", "celery"],
    "arq": [sys.executable, "-m", "arq"],
    "pacificpy": [sys.executable, "-c", "from pacificpy.cli import main; main()"],
}


def command_argv(command: str) -> list[str]:
    """``command`` as argv: its first word is the script of this interpreter's environment
    (``celery``, ``arq``, ``pacificpy``), the rest exactly as written."""
    words = shlex.split(command)
    script = Path(sys.executable).parent / words[0]
    head = [str(script)] if script.exists() else _FALLBACK[words[0]]
    return [*head, *words[1:]]


class Worker:
    """A worker command running in ``cwd``, in its own process group, logging to a file."""

    def __init__(self, argv: list[str], cwd: Path, env: Mapping[str, str] | None = None) -> None:
        self.log_path = cwd / f"worker-{time.monotonic_ns()}.log"
        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # pool or supervised children left over
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(10)


@contextmanager
def running(command: str, cwd: Path, env: Mapping[str, str] | None = None) -> Iterator[Worker]:
    worker = Worker(command_argv(command), cwd, env)
    try:
        yield worker
    finally:
        worker.stop()


@contextmanager
def imported(directory: Path, name: str) -> Iterator[ModuleType]:
    """Import module ``name`` from ``directory`` in this process; forget it afterwards.

    Its tasks leave the registry again (a later test may declare the same names from
    another file), and the backend it configured is shut down.
    """
    sys.path.insert(0, str(directory))
    importlib.invalidate_caches()
    try:
        module = importlib.import_module(name)
        yield module
    finally:
        sys.path.remove(str(directory))
        sys.modules.pop(name, None)
        for spec in registry.all_specs():
            if getattr(spec.fn, "__module__", None) == name:
                registry._tasks.pop(spec.name, None)
        shutdown_sync = getattr(get_backend(), "shutdown_sync", None)
        if shutdown_sync is not None:
            shutdown_sync(timeout=5)
