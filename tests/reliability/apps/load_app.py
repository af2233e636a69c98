"""The app the reliability suite serves with a real uvicorn: enqueue ``count`` tasks by HTTP.

Environment:
    PACIFICPY_REL_BACKEND: ``local`` (default), ``celery``, ``arq`` or ``sqlite`` (its
        file in ``PACIFICPY_REL_SQLITE``; the app runs the tasks in process).
    PACIFICPY_TEST_REDIS: the Redis the ``count`` tasks write to (and the broker of the
        Redis backends unless ``PACIFICPY_REL_BROKER`` says otherwise).
    PACIFICPY_REL_LOG: a file that gets PacificPy's background log (abandoned tasks, failed
        enqueues), for tests that check what a shutdown did.
    PACIFICPY_REL_SHUTDOWN_TIMEOUT: the app's ``shutdown_timeout``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from pacificpy import HTTPException, PacificPy
from pacificpy.background.backend import BackgroundBackend
from pacificpy.background.decorators import configure_background_tasks
from pacificpy.background.local import get_local_executor
from pacificpy.routing import Request
from tests.conformance import tasks
from tests.conformance.harness import SIGNING_KEY
from tests.reliability import tasks as rel_tasks

BACKEND = os.environ.get("PACIFICPY_REL_BACKEND", "local")
BROKER = os.environ.get("PACIFICPY_REL_BROKER") or os.environ.get("PACIFICPY_TEST_REDIS", "")


def _make_backend(name: str) -> BackgroundBackend:
    if name == "local":
        return get_local_executor(8)
    from tests.reliability.apps import backends

    return backends.make(name, BROKER)


_log = os.environ.get("PACIFICPY_REL_LOG")
if _log:
    handler = logging.FileHandler(_log)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    bg_logger = logging.getLogger("pacificpy.background")
    bg_logger.addHandler(handler)
    bg_logger.setLevel(logging.INFO)

_timeout = os.environ.get("PACIFICPY_REL_SHUTDOWN_TIMEOUT")
app = PacificPy(shutdown_timeout=float(_timeout) if _timeout else None)
configure_background_tasks(_make_backend(BACKEND), signing_key=SIGNING_KEY)


@app.get("/ok")
async def ok(request: Request) -> dict[str, Any]:
    return {"ok": True, "backend": BACKEND}


@app.post("/enqueue")
async def enqueue(request: Request) -> dict[str, Any]:
    """Enqueue one ``count(key)``; answer once the backend confirmed it."""
    body = await request.json()
    if not isinstance(body, dict) or not isinstance(body.get("key"), str):
        raise HTTPException(422, 'expected a JSON object {"key": "<string>"}')
    handle = await tasks.count.delay(body["key"])
    return {"id": handle.id}


@app.post("/enqueue-many")
async def enqueue_many(request: Request) -> dict[str, Any]:
    """Start one ``count(key)`` per key without awaiting any: the app must still deliver."""
    body = await request.json()
    keys = body["keys"]
    ids = [tasks.count.delay(key).id for key in keys]
    return {"ids": ids}


@app.post("/enqueue-slow")
async def enqueue_slow(request: Request) -> dict[str, Any]:
    """Enqueue ``sleep_for(seconds)`` tasks, to keep workers busy."""
    body = await request.json()
    ids = [(await tasks.sleep_for.delay(body["seconds"])).id for _ in range(body["n"])]
    return {"ids": ids}


@app.post("/enqueue-gated")
async def enqueue_gated(request: Request) -> dict[str, Any]:
    """Queue one ``gated_count(key, gate)`` per key: each holds a worker while the gate is
    set in Redis."""
    body = await request.json()
    ids = [rel_tasks.gated_count.delay(key, body["gate"]).id for key in body["keys"]]
    return {"ids": ids}


@app.post("/enqueue-many-slow")
async def enqueue_many_slow(request: Request) -> dict[str, Any]:
    """Queue one ``slow_count(key, seconds)`` per key (local executor: more than it can
    finish before a short shutdown timeout)."""
    body = await request.json()
    ids = [rel_tasks.slow_count.delay(key, body["seconds"]).id for key in body["keys"]]
    return {"ids": ids}
