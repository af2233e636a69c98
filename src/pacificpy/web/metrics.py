"""The ``/metrics`` route: ``app.include_metrics(path="/metrics", token=None)``.

It serves, in Prometheus' text format (OpenMetrics when the scraper asks for it), a
registry holding :class:`pacificpy.background.metrics.TaskMetricsCollector`, which reads
the configured monitor and backend at scrape time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.responses import Response
from starlette.routing import BaseRoute

from pacificpy.background.metrics import make_registry
from pacificpy.routing import Route
from pacificpy.web.auth import checked_token, require_token

if TYPE_CHECKING:
    from starlette.requests import Request

    from pacificpy.app import PacificPy

__all__ = ["metrics_routes", "mount_metrics"]


def mount_metrics(
    app: PacificPy,
    path: str = "/metrics",
    token: str | None = None,
    registry: CollectorRegistry | None = None,
) -> CollectorRegistry:
    """Serve Prometheus metrics at ``GET path``; return the registry served.

    ``app.include_metrics(path, token)`` calls this; see :func:`metrics_routes`.

    Args:
        app: the application.
        path: where to serve them.
        token: when given, scrapes must send ``Authorization: Bearer <token>`` (401
            without, 403 with a wrong or empty one; ``?token=`` is not read).
        registry: serve this registry instead of a fresh
            :func:`~pacificpy.background.metrics.make_registry` (register your own
            collectors on the returned one to add metrics).

    Raises:
        ConfigurationError: ``token`` is empty or blank.
    """
    served = registry if registry is not None else make_registry()
    app.router.routes.extend(metrics_routes(served, path, token))
    return served


def metrics_routes(
    registry: CollectorRegistry, path: str = "/metrics", token: str | None = None
) -> list[BaseRoute]:
    """The route serving ``registry`` at ``GET path``, as a Starlette route list.

    Raises:
        ConfigurationError: ``token`` is empty or blank.
    """
    token = checked_token(token, where="include_metrics")

    def metrics_endpoint(request: Request) -> Response:
        # A plain function: Starlette runs it in the thread pool, so reading queue lengths
        # or the Redis monitor store never blocks the event loop.
        require_token(request, token)
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), headers={"Content-Type": content_type})

    return [Route(path, metrics_endpoint, methods=["GET"], include_in_schema=False)]
