"""Ask a health endpoint over real HTTP (a worker's ``--health-port``)."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import orjson

__all__ = ["get_json", "ready_is"]


def get_json(port: int, path: str) -> tuple[int, Any]:
    """``(status, JSON body)`` of ``GET http://127.0.0.1:port/path``; ``(0, {})`` when
    nothing answers (yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())
    except OSError:
        return 0, {}


def ready_is(port: int, code: int) -> dict[str, Any] | None:
    """The body of ``/healthz/ready`` if it answers ``code`` now, else None."""
    status, body = get_json(port, "/healthz/ready")
    return body if status == code else None
