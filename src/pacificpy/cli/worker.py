"""``pacificpy worker myapp``: run the workers of the backend that ``myapp`` configures.

- ARQ: ``--workers N`` supervised worker processes (per queue with ``--queues``).
- Celery: the Celery worker for the app's Celery application.
- Local executor: nothing to run; it works inside the app process (exit code 2).
"""

from __future__ import annotations

import inspect
import logging
import sys
from typing import Any

import click

from pacificpy.cli._loading import load_module
from pacificpy.errors import BackendError, BackendNotAvailable

__all__ = ["command"]

LOCAL_MESSAGE = (
    "{module} uses the local executor, which runs tasks inside the application process "
    "itself: there is no separate worker to start. Serve the app (pacificpy run "
    "{module}:app), or configure a Celery or ARQ backend with configure_background_tasks(...) "
    "to run workers with this command."
)


@click.command("worker")
@click.argument("module", metavar="MODULE")
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes (ARQ: per queue, default 1; Celery: its concurrency).",
)
@click.option(
    "--queues", "-Q", default=None, help="Comma-separated queues to consume (default: default)."
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@click.option(
    "--health-port",
    type=click.IntRange(min=0, max=65535),
    default=None,
    help="Serve GET /healthz/live and /healthz/ready on this port (ready: consuming and "
    "reaching the backend).",
)
@click.option(
    "--health-grace",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds the worker may fail to reach its backend before it is not ready.",
)
def command(
    module: str,
    workers: int | None,
    queues: str | None,
    log_level: str,
    health_port: int | None,
    health_grace: float,
) -> None:
    """Run background workers for the backend that MODULE configures.

    MODULE is imported from the current directory (``myapp`` or ``myapp:app``; the part
    after the colon is ignored). ``pacificpy worker myapp --workers 4`` is what
    ``arq myapp.WorkerSettings --workers 4`` would mean if stock ``arq`` had that option.
    """
    from pacificpy.background.decorators import get_backend

    module_name = module.partition(":")[0]
    try:
        load_module(module_name)
    except BackendNotAvailable as exc:  # a backend whose extra is not installed
        raise click.ClickException(str(exc)) from exc
    backend = get_backend()
    run = getattr(backend, "run_worker", None)
    if backend.kind == "local" or run is None:
        click.echo(LOCAL_MESSAGE.format(module=module_name), err=True)
        sys.exit(2)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    queue_list = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    offered: dict[str, Any] = {
        "module": module_name,
        "queues": queue_list,
        "log_level": log_level,
        "loglevel": log_level.upper(),
    }
    if workers is not None:
        offered["workers"] = workers
    params = inspect.signature(run).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        offered = {k: v for k, v in offered.items() if k in params}
    if health_port is not None:
        offered["health"] = _serve_health(backend.kind, params, health_port, health_grace)
    try:
        code = run(**offered)
    except BackendError as exc:  # a backend that cannot start its workers says why
        raise click.ClickException(str(exc)) from exc
    sys.exit(int(code or 0))


def _serve_health(kind: str, params: Any, port: int, grace: float) -> Any:
    """Start the health endpoints; the ``WorkerHealth`` the backend's worker reports to."""
    from pacificpy.background.workers import WorkerHealth
    from pacificpy.cli._health import serve_health

    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if "health" not in params and not takes_any:
        raise click.UsageError(f"the {kind} backend's worker does not report its health")
    health = WorkerHealth(grace=grace)
    try:
        serve_health(port, health)
    except OSError as exc:
        raise click.ClickException(f"cannot serve health checks on port {port}: {exc}") from exc
    logging.getLogger("pacificpy.worker").info(
        "health checks on port %d: /healthz/live, /healthz/ready", port
    )
    return health
