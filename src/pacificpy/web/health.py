"""Health endpoints: ``app.include_health(path="/healthz", timeout=2.0)``.

====== ================ ==========================================================
GET    ``path/live``    200 ``{"status": "live"}`` while the process serves
GET    ``path/ready``   200 when the backend and the monitor store answer within
                        ``timeout`` seconds, else 503; the JSON names each part:
                        ``{"status": "not ready", "checks": {"backend": {"ok": false,
                        "error": "ConnectionError: ..."}, "monitor": {"ok": true,
                        "ms": 0.4}}}``
====== ================ ==========================================================

A liveness probe that restarts the process should use ``live`` only: a backend outage is
no reason to restart the app, and ``ready`` turns 200 by itself once the backend answers
again (the checks reconnect). The checks themselves are
:class:`pacificpy.background.health.Readiness`; :func:`health_routes` returns the routes
as a Starlette route list and :func:`mount_health` adds them to an app.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.responses import JSONResponse
from starlette.routing import BaseRoute

from pacificpy.background.health import DEFAULT_TIMEOUT, Readiness
from pacificpy.routing import Route

if TYPE_CHECKING:
    from starlette.requests import Request

    from pacificpy.app import PacificPy

__all__ = ["health_routes", "mount_health"]

logger = logging.getLogger("pacificpy.health")

_NO_STORE = "no-store"


def mount_health(app: PacificPy, path: str = "/healthz", timeout: float = DEFAULT_TIMEOUT) -> None:
    """Serve ``GET path/live`` and ``GET path/ready`` on ``app``; see :func:`health_routes`.

    Raises:
        ValueError: ``timeout`` is not a positive number.
    """
    app.router.routes.extend(health_routes(path, timeout))


def health_routes(path: str = "/healthz", timeout: float = DEFAULT_TIMEOUT) -> list[BaseRoute]:
    """``GET path/live`` and ``GET path/ready``, as a Starlette route list.

    Raises:
        ValueError: ``timeout`` is not a positive number.
    """
    readiness = Readiness(timeout)
    base = "/" + path.strip("/") if path.strip("/") else ""
    was_ready: list[bool] = [True]

    async def live(request: Request) -> JSONResponse:
        return JSONResponse({"status": "live"}, headers={"Cache-Control": _NO_STORE})

    # A plain function: Starlette runs it in its thread pool, so waiting for the checks
    # never holds up the event loop.
    def ready(request: Request) -> JSONResponse:
        ok, checks = readiness.check()
        if ok != was_ready[0]:
            was_ready[0] = ok
            if ok:
                logger.info("ready again: the backend and the monitor store answer")
            else:
                failed = {k: v.get("error") for k, v in checks.items() if not v["ok"]}
                logger.warning("not ready: %s", failed)
        body = {"status": "ready" if ok else "not ready", "checks": checks}
        return JSONResponse(
            body, status_code=200 if ok else 503, headers={"Cache-Control": _NO_STORE}
        )

    return [
        Route(base + "/live", live, methods=["GET"], include_in_schema=False),
        Route(base + "/ready", ready, methods=["GET"], include_in_schema=False),
    ]
