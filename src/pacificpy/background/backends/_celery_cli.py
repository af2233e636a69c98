"""``celery -A myapp worker`` when ``myapp.app`` is the PacificPy app, not the Celery app.

Celery's ``find_app`` reads ``myapp.app`` first. The guide's module holds ``app =
PacificPy()`` beside ``celery_app``, so under the ``celery`` command (and only there) the
module's type is swapped for one whose ``app`` attribute, read by ``find_app``, is the
Celery app of the configured backend. Nobody else sees a difference.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

from celery import Celery

from pacificpy.background import config

__all__ = ["answer_celery_cli"]

# module name -> the Celery app ``celery -A <module>`` should find in it.
_CLI_APPS: dict[str, Celery] = {}


@config.resets(__name__, "_CLI_APPS")
def _forget_cli_apps() -> None:
    _CLI_APPS.clear()


class _CeleryCLIModule(ModuleType):
    """Module type given to ``myapp`` under ``celery -A myapp``: when Celery's ``find_app``
    reads ``myapp.app`` and finds something that is not a Celery app (the PacificPy app),
    it gets the Celery app of the configured backend instead. Nobody else is affected."""

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if name == "app" and not isinstance(value, Celery):
            caller = sys._getframe(1)
            if caller.f_code.co_name == "find_app" and caller.f_globals.get(
                "__name__", ""
            ).startswith("celery."):
                celery_app = _CLI_APPS.get(super().__getattribute__("__name__"))
                if celery_app is not None:
                    return celery_app
        return value


def answer_celery_cli(celery_app: Celery) -> None:
    """Under ``celery -A module ...``, let Celery find ``celery_app`` in ``module``."""
    cli = sys.modules.get("celery.bin.celery")
    if cli is None:
        return
    try:
        import click

        ctx = click.get_current_context(silent=True)
    except Exception:  # pragma: no cover - click always comes with celery
        return
    if ctx is None:
        return
    root = ctx.find_root()
    if root.command is not getattr(cli, "celery", None):
        return
    name = root.params.get("app")
    if not isinstance(name, str) or ":" in name:
        return
    module = sys.modules.get(name)
    if module is None or type(module) not in (ModuleType, _CeleryCLIModule):
        return
    _CLI_APPS[name] = celery_app
    module.__class__ = _CeleryCLIModule
