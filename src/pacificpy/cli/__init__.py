"""The ``pacificpy`` command line.

Commands live in their own modules (``run``, ``worker``, ``tasks``) and each exposes a
click command as ``command``; those that exist are registered here.
"""

from __future__ import annotations

import importlib

import click

from pacificpy import __version__

__all__ = ["cli", "main"]

_COMMAND_MODULES = ("run", "worker", "tasks")


@click.group(name="pacificpy")
@click.version_option(__version__, prog_name="pacificpy")
def cli() -> None:
    """PacificPy: serve apps, run background workers, inspect tasks."""


def _register_commands(group: click.Group) -> None:
    for name in _COMMAND_MODULES:
        module_name = f"{__name__}.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Only a command module that does not exist (yet) is skipped; a missing
            # dependency inside one is a real error.
            if exc.name == module_name:
                continue
            raise
        group.add_command(module.command)


_register_commands(cli)


def main() -> None:
    """Run the ``pacificpy`` command line (the console-script entry point)."""
    cli(prog_name="pacificpy")
