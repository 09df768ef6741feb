"""The layering rule, checked on the source: adapters (``bridge/``) and plugins (``plugins/``) use relaydesk
only through ``bot_core.api``, never another ``bot_core`` module nor ``storage``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ("bridge", "plugins")
ALLOWED = "bot_core.api"


def _sources() -> list[Path]:
    return sorted(p for folder in CHECKED for p in (ROOT / folder).rglob("*.py"))


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """Every module an ``import`` or ``from ... import`` names, with its line (functions and
    ``TYPE_CHECKING`` blocks included); ``from bot_core import api`` counts as ``bot_core.api``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module in ("bot_core", "storage"):
                found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
            else:
                found.append((node.lineno, node.module))
    return found


def forbidden(module: str) -> bool:
    """Whether an adapter or a plugin may not import ``module``."""
    top = module.split(".")[0]
    if top == "storage":
        return True
    return top == "bot_core" and module != ALLOWED and not module.startswith(ALLOWED + ".")


def test_adapters_and_plugins_import_only_the_public_api() -> None:
    sources = _sources()
    assert len(sources) > 20  # the walk found the packages
    violations: list[str] = []
    uses_api = 0
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for line, module in imported_modules(tree):
            if forbidden(module):
                violations.append(f"{path.relative_to(ROOT)}:{line}: imports {module} (use {ALLOWED})")
            uses_api += module == ALLOWED
    assert violations == [], "\n".join(violations)
    assert uses_api > 10  # they do use relaydesk, through the API


@pytest.mark.parametrize(
    ("source", "bad"),
    [
        ("from bot_core.adapters import Delivery", ["bot_core.adapters"]),
        ("import bot_core.events", ["bot_core.events"]),
        ("from bot_core import outbox", ["bot_core.outbox"]),
        ("def f():\n    from storage.models import Message", ["storage.models"]),
        ("if TYPE_CHECKING:\n    from bot_core.desk import Desk", ["bot_core.desk"]),
        ("from bot_core.api import Plugin\nfrom bot_core import api\nimport aiohttp", []),
    ],
)
def test_the_rule_catches_what_it_should(source: str, bad: list[str]) -> None:
    modules = [module for _line, module in imported_modules(ast.parse(source))]
    assert [m for m in modules if forbidden(m)] == bad
