"""Architecture rules of issue 13 for backends and state, checked on the source with ``ast``.

A backend is a transport over a ``TaskState``: retries, dead letters, idempotency and the
poison guard are carried out once (``execution.settle`` and the base backend), never in the
Celery or ARQ modules. What these tests look for there:

- no call of a ``TaskState`` write or read of dead letters, idempotency keys, delivery
  counts or outcomes (``claim``, ``release``, ``add_dead_letter`` ...): the base backend and
  ``settle`` make those calls;
- no read of a decision's ``next_envelope`` or ``dead_letter``, no comparison with a
  decision kind (``"retry"``, ``"failed"`` ...): deciding and settling are not theirs;
- no comparison involving ``max_deliveries`` and no read of an envelope's
  ``idempotency_key`` (the base's ``poison_guard`` and ``key_to_claim`` answer).

And the dead-letter methods (``dead_letters``, ``requeue_dead_letter``,
``purge_dead_letters`` and their ``_sync`` twins) are defined in exactly one class.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "pacificpy"
BACKENDS = SRC / "background" / "backends"

TRANSPORT_MODULES = sorted(
    [*BACKENDS.glob("*celery*.py"), *BACKENDS.glob("*arq*.py")], key=lambda p: p.name
)

STATE_CALLS = frozenset(
    {
        "claim",
        "release",
        "add_dead_letter",
        "aadd_dead_letter",
        "list_dead_letters",
        "get_dead_letter",
        "pop_dead_letter",
        "clear_dead_letters",
        "count_delivery",
        "forget_deliveries",
        "store_outcome",
        "clear_outcome",
        "finish",
        "afinish",
        # the first release's names, in case they come back
        "dlq_add",
        "adlq_add",
        "dlq_pop",
        "adlq_pop",
        "dlq_purge",
        "delivered",
        "arelease",
        "result_set",
    }
)
DECISION_FIELDS = frozenset({"next_envelope", "dead_letter"})
DECISION_KINDS = frozenset({"retry", "completed", "failed", "dead"})
DEAD_LETTER_METHODS = frozenset(
    {
        "dead_letters",
        "dead_letters_sync",
        "requeue_dead_letter",
        "requeue_dead_letter_sync",
        "purge_dead_letters",
        "purge_dead_letters_sync",
    }
)


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(SRC.parent)}:{getattr(node, 'lineno', '?')}"


def _offences(path: Path) -> list[str]:
    found: list[str] = []
    for node in ast.walk(_tree(path)):
        func = node.func if isinstance(node, ast.Call) else None
        if isinstance(func, ast.Attribute) and func.attr in STATE_CALLS:
            found.append(f"{_where(path, node)} calls .{func.attr}()")
        if isinstance(node, ast.Attribute) and node.attr in DECISION_FIELDS | {"idempotency_key"}:
            found.append(f"{_where(path, node)} reads .{node.attr}")
        if isinstance(node, ast.Compare):
            for part in ast.walk(node):
                if isinstance(part, ast.Attribute) and part.attr == "max_deliveries":
                    found.append(f"{_where(path, node)} compares max_deliveries")
                if isinstance(part, ast.Constant) and part.value in DECISION_KINDS:
                    found.append(f"{_where(path, node)} compares with {part.value!r}")
    return found


def test_the_transport_modules_are_found() -> None:
    names = {p.name for p in TRANSPORT_MODULES}
    assert {"celery_backend.py", "_celery_worker.py", "arq_backend.py", "_arq_worker.py"} <= names


def test_no_retry_dead_letter_idempotency_or_poison_logic_in_celery_or_arq() -> None:
    found = [line for path in TRANSPORT_MODULES for line in _offences(path)]
    assert found == [], "\n".join(found)


def test_the_rule_catches_what_the_first_release_did() -> None:
    """The checker itself: the first release's Celery worker would have failed it."""
    sample = (
        "def carry_out(backend, decision, data, counted):\n"
        "    if decision.kind == 'retry':\n"
        "        nxt = decision.next_envelope\n"
        "    if deliveries > backend.max_deliveries:\n"
        "        pass\n"
        "    backend.state.dlq_add(decision.dead_letter)\n"
        "    backend.state.release(env.task_name, env.idempotency_key)\n"
    )
    path = BACKENDS / "_sample_celery.py"
    tree = ast.parse(sample)
    found: list[str] = []
    original, globals()["_tree"] = _tree, lambda _: tree
    try:
        found = _offences(path)
    finally:
        globals()["_tree"] = original
    assert len(found) >= 6, found


def test_dead_letter_methods_are_defined_in_exactly_one_class() -> None:
    owners: dict[str, list[str]] = {name: [] for name in DEAD_LETTER_METHODS}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(_tree(path)):
            if not isinstance(node, ast.ClassDef):
                continue
            for item in node.body:
                defines = isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                if defines and item.name in DEAD_LETTER_METHODS:  # type: ignore[union-attr]
                    owners[item.name].append(f"{path.name}:{node.name}")  # type: ignore[union-attr]
    assert owners == {name: ["backend.py:BackgroundBackend"] for name in DEAD_LETTER_METHODS}


def test_lua_scripts_are_files_loaded_with_register_script() -> None:
    """No Lua source in Python strings, and no hand-written NOSCRIPT fallback."""
    for path in sorted((SRC / "background").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "redis.call(" not in text, f"{path.name} holds Lua source"
        assert "NoScriptError" not in text and "evalsha" not in text, path.name
    assert sorted(p.name for p in (BACKENDS / "redis").glob("*.lua")) == [
        "arq_enqueue.lua",
        "cancel.lua",
        "dlq_trim.lua",
        "flow_admit.lua",
        "flow_renew.lua",
        "monitor_event.lua",
        "monitor_trim.lua",
        "schedule_advance.lua",
    ]
