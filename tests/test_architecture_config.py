"""Architecture rule: process-wide state has one home and one reset.

Every module-level global of ``pacificpy`` that can change while the process runs (a
mutable object, or a name some function rebinds with ``global``) either registers its
reset with ``pacificpy.background.config.resets`` (so ``reset_all()`` puts it back) or is
on :data:`ALLOWED` below with the reason it needs none. A new global without either fails
:func:`test_every_mutable_global_has_a_reset`.
"""

from __future__ import annotations

import ast
import contextvars
import importlib
import logging
import re
import threading
import types
import weakref
from pathlib import Path
from typing import Any

from celery import Celery

import pacificpy
from pacificpy.background import config, registry, tracing
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import get_local_executor
from pacificpy.background.monitor import configure_task_monitor, get_task_monitor, preview_call
from pacificpy.background.monitor import previews as preview_module

SRC = Path(pacificpy.__file__).resolve().parent

#: ``module:global`` -> why ``reset_all()`` leaves it alone.
ALLOWED: dict[str, str] = {
    "pacificpy.background.config:_resets": (
        "the reset registry itself: filled as modules are imported, like the task registry"
    ),
    "pacificpy.background.registry:_tasks": (
        "declared tasks: declared once, when their module is imported; a module is not "
        "imported twice, so a reset would lose tasks for good"
    ),
    "pacificpy.background.schedules:_schedules": (
        "declared schedules, beside the declared tasks (registry._tasks) and for the same "
        "reason: declared once, when their module is imported"
    ),
    "pacificpy.background.task:new_task_id": (
        "the task id source: its state is a random prefix and a counter (reseeded after "
        "fork); any state gives unique ids, none is configuration"
    ),
    "pacificpy.background.monitor.redis:_stores": (
        "weak set of live Redis monitor stores, for the fork hook: holds no store alive "
        "and configures nothing"
    ),
    "pacificpy.background.backends._celery_app:_REGISTERED": (
        "per Celery app (weak keys), the task names registered on that app: the app's own "
        "state, which a reset cannot take back from the app"
    ),
    "pacificpy.background.backends._celery_app:_VISIBILITY": (
        "per Celery app (weak keys), the visibility timeout PacificPy set on that app's "
        "configuration: the app's own state, which a reset cannot take back from the app"
    ),
    "pacificpy.background._consumers:_EMPTY": (
        "an empty context that consumer tasks are started from (each task gets a copy); "
        "nothing runs in it that sets a variable, so it stays empty"
    ),
    "pacificpy.background.backends._celery_app:AT_LEAST_ONCE_DEFAULTS": "read-only table",
    "pacificpy.background.backends._celery_publish:_EMBED": "read-only table",
    "pacificpy.background._argtypes:_RANK": "read-only table",
    "pacificpy.background.backend:_LAZY": "read-only table",
    "pacificpy.background.backend:_EXTRA_PACKAGES": "read-only table",
    "pacificpy.web.dashboard:_SECURITY_HEADERS": "read-only table",
    "pacificpy.web.events:_HEADERS": "read-only table",
    "pacificpy.cli.tasks:_STYLES": "read-only table",
}

# Values that cannot change (or whose changes are not process-wide: a ContextVar's value
# lives in each context).
_IMMUTABLE = (
    int,
    float,
    complex,
    str,
    bytes,
    bool,
    type(None),
    frozenset,
    range,
    re.Pattern,
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.BuiltinMethodType,
    types.MethodWrapperType,
    types.ModuleType,
    types.GenericAlias,
    types.UnionType,
    logging.Logger,
    contextvars.ContextVar,
    type(threading.Lock()),
    type(threading.RLock()),
)


def _immutable(value: Any) -> bool:
    if isinstance(value, tuple):
        return all(_immutable(v) for v in value)
    if isinstance(value, _IMMUTABLE) or type(value) is object:  # object(): a sentinel
        return True
    if type(value).__module__ in ("typing", "typing_extensions"):  # aliases, TypeVars
        return True
    # An instance of a class with empty __slots__ all the way down has no state.
    return not hasattr(value, "__dict__") and all(
        getattr(k, "__slots__", None) == () for k in type(value).__mro__[:-1]
    )


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _top_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """Module-level statements, looking inside ``if`` / ``try`` / ``with`` blocks."""
    out: list[ast.stmt] = []
    for node in body:
        out.append(node)
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            for field in ("body", "orelse", "finalbody"):
                out.extend(_top_level(getattr(node, field, [])))
            for handler in getattr(node, "handlers", []):
                out.extend(_top_level(handler.body))
    return out


def find_globals() -> dict[str, tuple[str, bool]]:
    """``module:name`` -> (``file:line``, rebound through a ``global`` statement)."""
    found: dict[str, tuple[str, bool]] = {}
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module = _module_name(path)
        where = path.relative_to(SRC.parent)
        for node in _top_level(tree.body):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets = [node.target]
            for target in targets:
                names = target.elts if isinstance(target, ast.Tuple) else [target]
                for name in names:
                    if isinstance(name, ast.Name) and name.id != "__all__":
                        found.setdefault(f"{module}:{name.id}", (f"{where}:{node.lineno}", False))
        for node in ast.walk(tree):
            if isinstance(node, ast.Global):
                for name in node.names:
                    found[f"{module}:{name}"] = (f"{where}:{node.lineno}", True)
    return found


def _value(key: str) -> Any:
    module, _, name = key.partition(":")
    return getattr(importlib.import_module(module), name)


def test_every_mutable_global_has_a_reset() -> None:
    found = find_globals()
    for key in found:  # importing every module registers every reset
        importlib.import_module(key.partition(":")[0])
    resettable = config.resettable()
    missing = [
        f"{where}: {key}"
        for key, (where, rebound) in sorted(found.items())
        if key not in resettable and key not in ALLOWED and (rebound or not _immutable(_value(key)))
    ]
    assert not missing, (
        "module-level state without a reset: register one with "
        "@config.resets(__name__, 'name') (or allow-list it here, with the reason):\n"
        + "\n".join(missing)
    )


def test_the_allow_list_names_globals_that_exist() -> None:
    found = find_globals()
    stale = sorted(set(ALLOWED) - set(found))
    assert not stale, f"ALLOWED names globals that no longer exist: {stale}"
    both = sorted(set(ALLOWED) & config.resettable())
    assert not both, f"reset by reset_all() and allow-listed too: {both}"


def test_registered_resets_name_real_globals() -> None:
    found = find_globals()
    for key in found:
        importlib.import_module(key.partition(":")[0])
    unknown = sorted(config.resettable() - set(found))
    assert not unknown, f"resets registered for names that are not module globals: {unknown}"


def _snapshot() -> dict[str, Any]:
    """A comparable copy of every resettable or allow-listed global."""

    def copy(value: Any) -> Any:
        if isinstance(value, (dict, weakref.WeakKeyDictionary, weakref.WeakValueDictionary)):
            return {k: id(v) for k, v in value.items()}
        if isinstance(value, (list, weakref.WeakSet, set)):
            return [id(v) for v in value]
        return id(value) if not _immutable(value) else value

    keys = config.resettable() | set(ALLOWED)
    return {key: copy(_value(key)) for key in sorted(keys)}


@background(name="tests.architecture.secret_task")
def secret_task(user: str, password: str) -> str:
    return user


def test_reset_all_puts_every_setting_back() -> None:
    import pacificpy.background.backends._celery_app as celery_app_module
    import pacificpy.background.backends._celery_cli as celery_cli_module
    import pacificpy.background.backends._celery_publish as celery_publish_module
    from pacificpy.background.backends.celery_backend import CeleryBackgroundBackend

    config.reset_all()
    clean = _snapshot()

    executor = get_local_executor(1)
    configure_background_tasks(executor)
    monitor = configure_task_monitor(max_records=10)
    tracing.enable_tracing()
    preview_call(("ann", "pw"), {}, task=secret_task.name)
    celery = CeleryBackgroundBackend(celery_app=Celery("arch", broker="redis://127.0.0.1:1/0"))
    configure_background_tasks(celery)  # attach: registry listener, worker signals, app link
    celery_publish_module._origin_name()
    celery_cli_module._CLI_APPS["arch"] = celery.celery_app
    try:
        assert config.configured_backend() is celery and get_task_monitor() is monitor
        assert config.trace_injectors and config.run_wrappers and tracing.tracing_enabled()
        assert preview_module._shapes and registry._listeners
        assert celery_app_module._BACKENDS and celery_app_module._signals_connected
        assert _snapshot() != clean

        config.reset_all()

        assert config.configured_backend() is None
        assert get_task_monitor() is not monitor
        assert not config.trace_injectors and not config.run_wrappers
        assert not tracing.tracing_enabled()
        assert not preview_module._shapes and not registry._listeners
        assert not celery_app_module._BACKENDS and not celery_app_module._signals_connected
        assert celery_publish_module._origin == (0, "") and not celery_cli_module._CLI_APPS
        changed = {
            k
            for k, v in _snapshot().items()
            if clean[k] != v and k not in _FRESH_ON_RESET | _PER_OBJECT
        }
        assert not changed, f"reset_all() left these changed: {sorted(changed)}"
    finally:
        celery.shutdown_sync(timeout=5)
        executor.shutdown_sync(timeout=5)
        config.reset_all()


#: Globals whose reset installs a fresh object (compared by identity, so they differ).
_FRESH_ON_RESET = frozenset(
    {
        "pacificpy.background.config:_monitor",  # a fresh monitor is made on next use
        "pacificpy.background.config:_default",  # likewise the default local executor
    }
)


#: Weak-keyed tables of per-object state: a new object gets its entry there, nothing else.
_PER_OBJECT = frozenset(
    {
        "pacificpy.background.backends._celery_app:_REGISTERED",
        "pacificpy.background.backends._celery_app:_VISIBILITY",
    }
)


def _make_backends() -> list[Any]:
    from arq.connections import RedisSettings

    from pacificpy.background.backends.arq_backend import ARQBackgroundBackend
    from pacificpy.background.backends.celery_backend import CeleryBackgroundBackend
    from pacificpy.background.backends.sqlite import SQLiteBackgroundBackend
    from pacificpy.testing import CapturingBackend, EagerBackend

    return [
        SQLiteBackgroundBackend("never-opened.db"),  # constructing opens no file
        get_local_executor(1),
        CeleryBackgroundBackend(celery_app=Celery("ctor", broker="redis://127.0.0.1:1/0")),
        ARQBackgroundBackend(RedisSettings(host="127.0.0.1", port=1)),
        EagerBackend(),
        CapturingBackend(),
    ]


def test_backend_constructors_change_no_globals() -> None:
    _make_backends()  # the first construction may import modules (and register resets)
    config.reset_all()
    before = _snapshot()
    made = _make_backends()
    try:
        after = _snapshot()
        changed = sorted(k for k in before if before[k] != after[k] and k not in _PER_OBJECT)
        assert not changed, f"constructing a backend changed {changed}"
    finally:
        for backend in made:
            shutdown = getattr(backend, "shutdown_sync", None)
            if shutdown is not None:
                shutdown(timeout=5)


def test_reset_all_keeps_declared_tasks_and_the_hook_lists() -> None:
    """Hooks are cleared in place (the task machinery holds config's own lists), and
    declared tasks survive: they are declared once, at import."""
    from pacificpy.background import decorators, execution

    config.reset_all()
    assert decorators.trace_injectors is config.trace_injectors
    assert execution.run_wrappers is config.run_wrappers
    assert secret_task.name in registry.names()
