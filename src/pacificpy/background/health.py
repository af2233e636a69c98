"""Is this process's task system ready: does the backend answer, does the monitor store?

:class:`Readiness` runs each check on a thread of its own and waits for it at most
``timeout`` seconds, so a backend that hangs answers "not ready" in time instead of
holding the caller. A check still running from an earlier call is waited for again, never
started twice: a hung backend costs one thread, however often it is asked.

``app.include_health()`` (:mod:`pacificpy.web.health`) serves it over HTTP; it knows
nothing of HTTP itself.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections.abc import Callable
from typing import Any

from pacificpy.background.config import get_backend, get_task_monitor

__all__ = ["DEFAULT_TIMEOUT", "Probe", "Readiness"]

#: Seconds a readiness check waits for each part by default.
DEFAULT_TIMEOUT = 2.0


class Probe:
    """One blocking check, run on a thread of its own, never two at once."""

    def __init__(self, name: str, check: Callable[[], object]) -> None:
        self.name = name
        self.check = check
        self._lock = threading.Lock()
        self._future: cf.Future[float] | None = None

    def start(self) -> cf.Future[float]:
        """The running check, or a new one if none runs; its result is the seconds it took."""
        with self._lock:
            fut = self._future
            if fut is None or fut.done():
                fut = self._future = cf.Future()
                threading.Thread(
                    target=self._run, args=(fut,), name=f"pacificpy-health-{self.name}",
                    daemon=True,
                ).start()  # fmt: skip
        return fut

    def _run(self, fut: cf.Future[float]) -> None:
        started = time.perf_counter()
        try:
            self.check()
        except BaseException as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(time.perf_counter() - started)

    @staticmethod
    def outcome(fut: cf.Future[float], wait: float, timeout: float) -> dict[str, Any]:
        """``{"ok": True, "ms": ...}``, or ``{"ok": False, "error": ...}`` if it failed or
        gave no answer within ``wait`` seconds (of the check's ``timeout``)."""
        try:
            took = fut.result(timeout=max(0.0, wait))
        except cf.TimeoutError:
            return {"ok": False, "error": f"no answer within {timeout:g}s"}
        except Exception as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        return {"ok": True, "ms": round(took * 1000, 1)}


class Readiness:
    """The readiness of this process's task system: the configured backend (its transport
    and state: ``ping_sync()``) and the monitor store (``ping()``)."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self.timeout = float(timeout)
        self.probes = [
            Probe("backend", lambda: get_backend().ping_sync()),
            Probe("monitor", lambda: get_task_monitor().store.ping()),
        ]

    def check(self) -> tuple[bool, dict[str, dict[str, Any]]]:
        """``(ready, {part: {"ok", "ms" or "error"}})``, within about ``timeout`` seconds."""
        deadline = time.monotonic() + self.timeout
        started = [(p, p.start()) for p in self.probes]
        out: dict[str, dict[str, Any]] = {}
        for probe, fut in started:
            out[probe.name] = Probe.outcome(fut, deadline - time.monotonic(), self.timeout)
        return all(v["ok"] for v in out.values()), out
