"""The package's modules import each other without cycles (at import time, not type-checking)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

import threadloom

PACKAGE = Path(threadloom.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(tree: ast.Module, modules: set[str]) -> set[str]:
    """Modules of this package imported at module level, outside `if TYPE_CHECKING:`."""
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module in modules:
            submodules = {f"{node.module}.{a.name}" for a in node.names} & modules
            found.update(submodules)
            if len(submodules) < len(node.names):  # names taken from the module itself
                found.add(node.module)
    return found


def import_graph() -> nx.DiGraph:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(paths)
    for name, path in paths.items():
        for target in _runtime_imports(ast.parse(path.read_text()), set(paths)):
            if target != name:
                graph.add_edge(name, target)
    return graph


def test_no_module_imports_itself_back() -> None:
    graph = import_graph()
    assert graph.number_of_nodes() > 100
    assert list(nx.simple_cycles(graph)) == []


def test_the_check_sees_a_cycle_when_there_is_one() -> None:
    graph = import_graph()
    graph.add_edge("threadloom.types", "threadloom.orchestrator.runner")
    assert list(nx.simple_cycles(graph))
