"""Structural guarantees the deadlock analysis (docs/deadlocks.md) relies on."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*ROOT.joinpath("app").rglob("*.py"), *ROOT.joinpath("services").rglob("*.py")])
# A worker thread that waits on the loop while the loop waits on the pool never ends.
LOOP_CALLBACKS = {
    "run_coroutine_threadsafe",
    "from_thread",
    "BlockingPortal",
    "start_blocking_portal",
}
SDK_MODULES = ("supabase", "supabase_auth", "gotrue")


def _names(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.ImportFrom):
            found.update(alias.name for alias in node.names)
            found.add((node.module or "").rsplit(".", 1)[-1])
    return found


def _imported_modules(tree: ast.AST) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_thread_waits_on_the_event_loop(path: Path) -> None:
    """No code calls back into the loop from a thread (run_coroutine_threadsafe, from_thread)."""
    used = _names(ast.parse(path.read_text())) & LOOP_CALLBACKS
    assert not used, f"{path.name} uses {sorted(used)}"


# The gateway and its parts: the account-lifecycle calls (a mixin taking the gateway's one
# call path), that call path itself, and the SDK's types and errors it reads answers with.
GATEWAY_MODULES = {
    "services/gateway.py",
    "services/account_gateway.py",
    "services/upstream_call.py",
    "services/upstream_errors.py",
    "services/upstream_session.py",
}


def test_only_the_gateway_imports_the_sdk() -> None:
    """The blocking SDK is reachable only through services/gateway.py's bounded pool."""
    importers = {
        str(path.relative_to(ROOT))
        for path in SOURCES
        if any(
            module.split(".")[0] in SDK_MODULES
            for module in _imported_modules(ast.parse(path.read_text()))
        )
    }
    assert importers == GATEWAY_MODULES


def test_services_do_not_import_starlette() -> None:
    """Domain logic stays free of the HTTP framework (layers only point down)."""
    offenders = [
        str(path.relative_to(ROOT))
        for path in ROOT.joinpath("services").rglob("*.py")
        if any(
            m.split(".")[0] == "starlette" for m in _imported_modules(ast.parse(path.read_text()))
        )
    ]
    assert offenders == []
