"""Writing strategy graphs: a Python builder, and plans given as plain dicts (YAML/JSON data)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from threadloom.errors import ConfigError, GraphError
from threadloom.graph.nodes import GraphNode, Join, Wait, node_data
from threadloom.graph.plan import Graph
from threadloom.strategies.base import Strategy
from threadloom.types import Budget


class GraphBuilder:
    """Builds a validated `Graph` node by node.

    Example:
        >>> g = GraphBuilder()
        >>> g.add("sot", "skeleton-of-thought:max_points=4")
        >>> g.add("bon", "best-of-n:n=4")
        >>> g.join("final", ["sot", "bon"], reducer="first")
        >>> plan = g.build()
    """

    def __init__(self) -> None:
        self._nodes: dict[str, dict[str, Any]] = {}

    def add(
        self,
        name: str,
        strategy: str | dict[str, Any] | Strategy,
        *,
        inputs: list[str] | str | None = None,
        map: bool = False,
        budget: Budget | None = None,
    ) -> GraphBuilder:
        """Add a strategy node; with several `inputs` and a reducer strategy it joins them all.

        Raises:
            GraphError: The name is taken.
        """
        listed = [inputs] if isinstance(inputs, str) else list(inputs or [])
        return self._put(
            name, {"strategy": strategy, "inputs": listed, "map": map, "budget": budget}
        )

    def join(
        self,
        name: str,
        inputs: list[str],
        *,
        reducer: str | dict[str, Any] | Strategy = "concat",
        wait: Wait = "all",
        budget: Budget | None = None,
    ) -> GraphBuilder:
        """Add a join: `reducer` combines the candidates of the first `wait` inputs to finish.

        Args:
            name: The node's name.
            inputs: The nodes joined.
            reducer: first, concat, vote, select, or a strategy that consumes inputs.
            wait: "all", "first", or k; the inputs that lose a race are cancelled.
            budget: Limits for the reducer's own work (scoring, say).

        Raises:
            GraphError: The name is taken.
        """
        node: dict[str, Any] = {"join": list(inputs), "reducer": reducer, "budget": budget}
        if wait != "all":
            node["wait"] = wait
        return self._put(name, node)

    def _put(self, name: str, node: dict[str, Any]) -> GraphBuilder:
        if name in self._nodes:
            raise GraphError(f"node {name!r} is already in the graph; give each node its own name")
        self._nodes[name] = node
        return self

    def build(self) -> Graph:
        """Validate (acyclic, one sink, racing joins over sibling branches, known kinds) and
        return the graph.

        Raises:
            GraphError: naming the node at fault and how to fix it.
        """
        return graph_from_dict({"nodes": self._nodes})


StrategyGraph = GraphBuilder
"""The builder's former name, kept so existing code keeps working."""


def graph_from_dict(data: Any) -> Graph:
    """A validated graph from plan data: ``{nodes: {name: node}}``, or the node mapping itself.

    A node is a strategy spec, ``{strategy: ..., inputs: [...], map: ..., budget: ...}``, a
    strategy's own fields with ``kind`` (plus inputs/map/budget), or a join
    ``{join: [...], reducer: ..., wait: ...}``.

    Raises:
        GraphError: naming the node at fault and how to fix it.
    """
    if not isinstance(data, Mapping):
        raise GraphError("a plan must be a mapping: nodes: {name: node}, or the nodes themselves")
    if "nodes" in data:
        nodes = data["nodes"]
        extra = {k for k, v in data.items() if k not in ("nodes", "kind") and v is not None}
        if extra:
            raise GraphError(
                f"unknown top-level plan keys {sorted(extra)}; only 'nodes' is allowed"
            )
    else:
        nodes = data
    if not isinstance(nodes, Mapping):
        raise GraphError("'nodes' must map node names to nodes")
    parsed = {str(name): _parse_node(str(name), node) for name, node in nodes.items()}
    try:
        return Graph(nodes=parsed)
    except ValidationError as exc:
        raise GraphError(
            "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        ) from None


def _parse_node(name: str, node: Any) -> GraphNode:
    node = node_data(node)
    kind: type[GraphNode] = Join if isinstance(node, Mapping) and "join" in node else GraphNode
    try:
        return kind.model_validate(node)
    except ConfigError as exc:
        raise GraphError(f"node {name!r}: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'node'}: "
            f"{str(e['msg']).removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise GraphError(f"node {name!r}: {problems}") from None
