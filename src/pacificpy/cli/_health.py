"""The health endpoints of ``pacificpy worker --health-port P``: a small HTTP server on a
daemon thread (the standard library's; a worker serves no app).

``GET /healthz/live`` answers 200 while the process runs; ``GET /healthz/ready`` answers
200 when every check of the worker's
:class:`~pacificpy.background.workers.WorkerHealth` passes (it consumes and reaches its
backend), else 503, with the same JSON shape as ``app.include_health()``.
"""

from __future__ import annotations

import http.server
import threading
from typing import Any

import orjson

from pacificpy.background.workers import WorkerHealth

__all__ = ["serve_health"]

LIVE = "/healthz/live"
READY = "/healthz/ready"


def serve_health(port: int, health: WorkerHealth, host: str = "0.0.0.0") -> http.server.HTTPServer:
    """Serve ``health`` on ``host:port`` from a daemon thread; return the server.

    Raises:
        OSError: the port cannot be bound.
    """

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            if path == LIVE:
                self._send(200, {"status": "live"})
            elif path == READY:
                ok, checks = health.report()
                self._send(200 if ok else 503, {"status": "ready" if ok else "not ready",
                                                "checks": checks})  # fmt: skip
            else:
                self._send(404, {"error": "Not Found", "detail": "Not Found", "status": 404})

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = orjson.dumps(body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds would flood the log

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="pacificpy-health", daemon=True).start()
    return server
