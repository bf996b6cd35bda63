"""Strategy graphs (plans): nodes, joins, validation, the executor and YAML/JSON plan files.

Vocabulary (as in pydantic_graph):

- fork: several nodes list the same input; each gets the same candidates (broadcast).
- map: a node with ``map: true`` runs one copy of its strategy per input candidate, in parallel;
  a generator copy continues that candidate's text.
- join: ``{join: [a, b], reducer: vote, wait: all}`` combines the candidates of its inputs with a
  reducer. ``wait`` says how many inputs it waits for: ``all``, ``first`` (the first branch to
  finish; the others are cancelled and their generations aborted on the worker) or a number k
  (the first k). ``reducer: first`` is ``wait: first`` with the winner's candidates unchanged.
  A strategy node that consumes inputs (vote, select, concat) with several inputs is a join
  that waits for all of them.

Names resolve lazily, so importing one module of the package (the pure reducers, say) loads
nothing else.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "GraphNode": "threadloom.graph.nodes",
    "Join": "threadloom.graph.nodes",
    "Wait": "threadloom.graph.nodes",
    "Graph": "threadloom.graph.plan",
    "GraphBuilder": "threadloom.graph.builder",
    "StrategyGraph": "threadloom.graph.builder",
    "graph_from_dict": "threadloom.graph.builder",
    "load_plan": "threadloom.graph.files",
    "execute_graph": "threadloom.graph.executor",
    "validate_graph": "threadloom.graph.validation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'threadloom.graph' has no attribute {name!r}")
    return getattr(import_module(module), name)
