"""Writing strategy graphs: a Python builder and YAML/JSON plan files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from threadloom.errors import ConfigError, GraphError
from threadloom.orchestrator.graph import GraphNode
from threadloom.strategies.base import Strategy
from threadloom.strategies.graph import Graph
from threadloom.types import Budget


class StrategyGraph:
    """Builds a validated `Graph` strategy node by node.

    Example:
        >>> g = StrategyGraph()
        >>> g.add("sot", "skeleton-of-thought:max_points=4")
        >>> g.add("bon", "best-of-n:n=4")
        >>> g.add("final", "vote", inputs=["sot", "bon"])
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
    ) -> StrategyGraph:
        if name in self._nodes:
            raise GraphError(f"node {name!r} is already in the graph; give each node its own name")
        listed = [inputs] if isinstance(inputs, str) else list(inputs or [])
        self._nodes[name] = {"strategy": strategy, "inputs": listed, "map": map, "budget": budget}
        return self

    def build(self) -> Graph:
        """Validate (acyclic, one sink, joins dominated by forks, known kinds) and return."""
        return graph_from_dict({"nodes": self._nodes})


def graph_from_dict(data: dict[str, Any]) -> Graph:
    if not isinstance(data, dict) or "nodes" not in data:
        raise GraphError("a plan needs a top-level 'nodes' mapping: node name -> node")
    nodes = data["nodes"]
    if not isinstance(nodes, dict):
        raise GraphError("'nodes' must map node names to nodes")
    extra = {k for k, v in data.items() if k not in ("nodes", "kind") and v is not None}
    if extra:
        raise GraphError(f"unknown top-level plan keys {sorted(extra)}; only 'nodes' is allowed")
    parsed: dict[str, GraphNode] = {}
    for name, node in nodes.items():
        if isinstance(node, (str, Strategy)):
            node = {"strategy": node}
        if isinstance(node, dict) and "strategy" not in node and "kind" in node:
            node = {
                "strategy": {k: v for k, v in node.items() if k not in ("inputs", "map", "budget")},
                **{k: v for k, v in node.items() if k in ("inputs", "map", "budget")},
            }
        try:
            parsed[str(name)] = GraphNode.model_validate(node)
        except ConfigError as exc:
            raise GraphError(f"node {name!r}: {exc}") from None
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'node'}: "
                f"{str(e['msg']).removeprefix('Value error, ')}"
                for e in exc.errors()
            )
            raise GraphError(f"node {name!r}: {problems}") from None
    try:
        return Graph(nodes=parsed)
    except ValidationError as exc:
        raise GraphError(
            "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        ) from None


def load_plan(path: str | Path) -> Graph:
    """Read a strategy graph from a YAML or JSON file."""
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"plan file not found: {source}")
    try:
        text = source.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{source} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
            f"{exc.start}); save the plan as UTF-8"
        ) from None
    try:
        data = json.loads(text) if source.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "JSON" if source.suffix == ".json" else "YAML"
        raise GraphError(f"{source} is not valid {kind}: {exc}") from None
    return graph_from_dict(data)
