"""``pacificpy run module:app``: serve an application with uvicorn."""

from __future__ import annotations

from typing import Any

import click

from pacificpy.app import server_defaults
from pacificpy.cli._loading import LoadError, load_attr, split_spec

__all__ = ["command"]


@click.command("run")
@click.argument("app", metavar="MODULE:APP")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8000, type=int, show_default=True, help="Port to bind.")
@click.option("--reload", is_flag=True, help="Restart the server when code changes.")
@click.option(
    "--workers", type=click.IntRange(min=1), default=None, help="Number of server processes."
)
@click.option(
    "--loop",
    type=click.Choice(["auto", "asyncio", "uvloop"]),
    default=None,
    help="Event loop (default: uvloop when installed, else asyncio).",
)
@click.option(
    "--http",
    type=click.Choice(["auto", "h11", "httptools"]),
    default=None,
    help="HTTP protocol implementation (default: httptools when installed, else h11).",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug", "trace"]),
    default=None,
    help="uvicorn's log level (default: info).",
)
def command(
    app: str,
    host: str,
    port: int,
    reload: bool,
    workers: int | None,
    loop: str | None,
    http: str | None,
    log_level: str | None,
) -> None:
    """Serve the ASGI application MODULE:APP (APP defaults to ``app``) with uvicorn.

    The module is imported from the current directory, so run this where ``myapp.py``
    (or the ``myapp`` package) lives: ``pacificpy run myapp:app --reload``.
    """
    import uvicorn

    module_name, attr = split_spec(app)
    target: Any = load_attr(app)
    if not callable(target):
        raise LoadError(
            f"{module_name}:{attr} is a {type(target).__name__}, not an ASGI application"
        )

    defaults = server_defaults()
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "reload": reload,
        "loop": loop or defaults["loop"],
        "http": http or defaults["http"],
    }
    if workers is not None:
        options["workers"] = workers
    if log_level is not None:
        options["log_level"] = log_level
    # uvicorn re-imports the application in its child processes, so reload and several
    # workers need the import string; a single plain server takes the loaded object.
    served: Any = f"{module_name}:{attr}" if reload or (workers or 1) > 1 else target
    uvicorn.run(served, **options)
