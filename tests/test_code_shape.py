"""The code's shape, checked: what docs/design.md promises a reader of ``plugins/huitouke``.

- every library logger goes through ``huitouke.pii.get_logger`` (its filter masks phone numbers
  and e-mail addresses), never a plain ``logging.getLogger``;
- no function longer than :data:`MAX_FUNCTION_LINES` (migrations aside: they are history);
- no import cycle between the package's modules, lazy imports inside functions included;
- no module imports a private (``_name``) name of another package;
- every stage has the same entry, ``<stage>/daily.py: run_day``.

Read from the source with ``ast``; nothing is imported or run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "plugins" / "huitouke"
MAX_FUNCTION_LINES = 80
STAGES = ("intake", "segments", "campaigns", "render", "evaluate")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> Iterator[tuple[str, Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield _module_name(path), path, ast.parse(path.read_text(encoding="utf-8"), str(path))


SOURCES = list(_sources())
MODULES = {name for name, _, _ in SOURCES}


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', 0)}"


def _imports(tree: ast.Module) -> Iterator[tuple[ast.AST, str, str | None]]:
    """(node, module, imported name or None) for every import, inside functions too."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                yield node, node.module, alias.name


def test_library_loggers_go_through_the_masking_filter():
    plain = []
    for name, path, tree in SOURCES:
        if name == "huitouke.pii":
            continue  # where get_logger itself is made
        for node in ast.walk(tree):
            # a logger kept to log through; setting another logger's level in place is fine
            if isinstance(node, ast.Assign | ast.AnnAssign) and _is_plain_get_logger(node.value):
                plain.append(_where(path, node))
    assert not plain, f"log through huitouke.pii.get_logger, not logging.getLogger: {plain}"


def _is_plain_get_logger(value: ast.AST | None) -> bool:
    return isinstance(value, ast.Call) and ast.unparse(value.func) in ("logging.getLogger", "getLogger")


def test_the_logger_check_sees_a_plain_logger():
    tree = ast.parse("import logging\nlog = logging.getLogger(__name__)\nlogging.getLogger('x').setLevel(10)")
    kept = [n for n in ast.walk(tree) if isinstance(n, ast.Assign) and _is_plain_get_logger(n.value)]
    assert len(kept) == 1


def test_no_function_is_too_long_to_hold_in_ones_head():
    long = []
    for name, path, tree in SOURCES:
        if ".migrations." in f"{name}.":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{_where(path, node)} {node.name} ({lines} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def _import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, _, tree in SOURCES:
        targets = set()
        for _, module, imported in _imports(tree):
            for target in (module, f"{module}.{imported}" if imported else None):
                # a module's own packages are imported before it anyway: not a cycle of ours
                if target in MODULES and target != name and not name.startswith(f"{target}."):
                    targets.add(target)
        graph[name] = targets
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph[start])
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import one another, directly or through others (a hundred modules:
    one search from each is quick and plainer than Tarjan's algorithm)."""
    reach = {node: _reachable(graph, node) for node in graph}
    groups = {
        tuple(sorted({node} | {other for other in reach[node] if node in reach[other]}))
        for node in graph
        if node in reach[node]
    }
    return sorted(list(group) for group in groups)


def test_no_import_cycles():
    assert _cycles(_import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_module_imports_another_packages_private_name():
    private = []
    for name, path, tree in SOURCES:
        for node, module, imported in _imports(tree):
            if imported is None or not module.startswith("huitouke"):
                continue
            if imported.startswith("_") and _package_of(module) != _package_of(name):
                private.append(f"{_where(path, node)} {module}.{imported}")
    assert not private, f"private names imported across packages: {private}"


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_has_one_entry_for_the_business_day(stage):
    path = PACKAGE / stage / "daily.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    entries = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run_day"]
    assert entries == ["run_day"]
