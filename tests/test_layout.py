"""The package's layout, read from its source: what one subpackage may take from another."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "genai_coroutines"


def imported_from(path: Path, node: ast.ImportFrom) -> Path:
    """The folder of the module (or package) `node` imports from, inside `PACKAGE`."""
    if node.level:
        base = path.parent
        for _ in range(node.level - 1):
            base = base.parent
    else:
        base = PACKAGE.parent
    target = base.joinpath(*(node.module or "").split(".")) if node.module else base
    return target.parent if target.with_suffix(".py").is_file() else target


def test_no_private_name_is_imported_across_subpackages() -> None:
    """A `_name` is its module's own business: what another subpackage needs is public in
    its owning module, so it can be found, documented and changed knowingly."""
    crossings = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if not node.level and not (node.module or "").startswith(PACKAGE.name):
                continue  # another distribution's names are its own affair
            source = imported_from(path, node)
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and source != path.parent:
                    where = path.relative_to(PACKAGE.parent)
                    crossings.append(f"{where}:{node.lineno} imports {alias.name}")
    assert crossings == []
