"""The package's layout: the imports between its modules go one way only, and no private
name crosses from one subpackage to another.

Read from the source with `ast`, so an import inside a function (deferred) or under
`TYPE_CHECKING` counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import genai_coroutines

PACKAGE = Path(genai_coroutines.__file__).parent


def modules() -> dict[str, tuple[Path, bool]]:
    """Each module's dotted name below the package ("" for the package itself) -> (its
    file, whether it is a package's `__init__`)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def imports(source: str, name: str, package: bool) -> set[str]:
    """The modules (dotted names below the package) that a module's imports name,
    wherever the import statement stands."""
    parts = name.split(".") if name else []
    here = parts if package else parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name.split(".", 1) for alias in node.names]
            found |= {t[1] for t in targets if t[0] == "genai_coroutines" and len(t) > 1}
        elif isinstance(node, ast.ImportFrom):
            module = node.module.split(".") if node.module else []
            if node.level:  # relative: from the importing module's package up
                target = [*here[: len(here) - node.level + 1], *module]
            elif module[:1] == ["genai_coroutines"]:
                target = module[1:]
            else:
                continue
            found.add(".".join(target))
            found |= {".".join([*target, alias.name]) for alias in node.names}
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules it imports (its own enclosing packages aside)."""
    found = modules()
    graph = {}
    for name, (path, package) in found.items():
        named = imports(path.read_text(encoding="utf-8"), name, package)
        graph[name] = {
            target
            for target in named
            if target in found
            and target != name
            and not name.startswith(f"{target}.")
            and target != ""
        }
    return graph


def circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The groups of more than one module that import each other (Tarjan's strongly
    connected components)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        for target in graph[node]:
            if target not in order:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], order[target])
        if low[node] == order[node]:
            group = set()
            while (member := stack.pop()) != node:
                group.add(member)
            if group:
                found.append(frozenset({node, *group}))

    for node in graph:
        if node not in order:
            visit(node)
    return found


def test_deferred_imports_count_and_circles_are_found() -> None:
    source = "from ...engine import x\n\ndef run():\n    from .jobs import BatchJobs\n"
    assert imports(source, "responses.batch.path", False) >= {"engine", "responses.batch.jobs"}
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [frozenset({"a", "b", "c"})]


def test_no_import_circle_in_the_package() -> None:
    assert circles(import_graph()) == []


def test_the_batch_api_path_is_one_subpackage_without_a_circle() -> None:
    graph = import_graph()
    batch = {name for name in graph if name.startswith("responses.batch.")}
    assert {name.rsplit(".", 1)[1] for name in batch} == {
        "answers", "collect", "context", "fallback", "jobs", "options", "path", "spool",
        "submitter", "wire",
    }  # fmt: skip
    assert not [name for name in graph if name.startswith("responses.batch_")]
    assert not any(group & batch for group in circles(graph))


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
