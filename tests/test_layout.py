"""The layout's rules (README "Layout"), read from the source files themselves:
every product module stays small, and imports flow one way (``schemas`` <-
``pipeline`` <- ``ops`` | ``consumers`` | ``producers`` | ``services`` <- ``cli``).
Without these, modules grew past the size rule unnoticed, and a hot-path import
of an operator tool would pass every other test."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The product's packages: each folder at the root is ``nexanest.<folder>``.
PRODUCT = ("schemas", "pipeline", "ops", "consumers", "producers", "cli", "services")
#: Lines a product module may have: past this, it holds more than one concern.
MAX_LINES = 400


def _modules(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (REPO / folder).rglob("*.py"))


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (functions and ``TYPE_CHECKING``
    blocks too), with each imported name also as ``module.name``."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _offenders(folders: tuple[str, ...], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """Per module of ``folders``, the imports of a ``forbidden`` package; asserts the folders were read."""
    assert all((REPO / folder / "__init__.py").is_file() for folder in folders)  # the folders were found
    modules = _modules(*folders)
    found = {
        str(path.relative_to(REPO)): sorted(
            m for m in _imported_modules(path) if any(m == f or m.startswith(f + ".") for f in forbidden)
        )
        for path in modules
    }
    return {path: imports for path, imports in found.items() if imports}


def test_no_product_module_exceeds_the_size_limit() -> None:
    sizes = {str(path.relative_to(REPO)): len(path.read_text().splitlines()) for path in _modules(*PRODUCT)}
    for package in PRODUCT:
        assert any(path.startswith(package + "/") for path in sizes), package
    assert {path: n for path, n in sizes.items() if n > MAX_LINES} == {}


def test_the_hot_path_imports_no_tool_service_feed_or_consumer() -> None:
    others = ("ops", "cli", "services", "producers", "consumers")
    assert _offenders(("pipeline",), tuple(f"nexanest.{p}" for p in others)) == {}


def test_the_schemas_import_nothing_else_of_the_project() -> None:
    others = tuple(f"nexanest.{p}" for p in PRODUCT if p != "schemas")
    assert _offenders(("schemas",), others) == {}


def test_nothing_outside_the_cli_imports_it() -> None:
    folders = tuple(p for p in PRODUCT if p != "cli")
    assert _offenders(folders, ("nexanest.cli",)) == {}
