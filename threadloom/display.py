"""Terminal renderings: a strategy graph, and a thought graph read back from a JSONL trace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import networkx as nx
from rich.tree import Tree

from threadloom.errors import ConfigError
from threadloom.strategies.graph import Graph


def graph_tree(plan: Graph) -> Tree:
    """The plan as a tree from its start nodes; a join shows under each input, marked."""
    graph: nx.DiGraph = nx.DiGraph()
    for name, node in plan.nodes.items():
        graph.add_node(name)
        for source in node.inputs:
            graph.add_edge(source, name)
    root = Tree(
        f"[bold]strategy graph[/] ({len(plan.nodes)} nodes, result from [green]{plan.sink}[/])"
    )

    def label(name: str) -> str:
        node = plan.nodes[name]
        tags = []
        if node.map:
            tags.append("map")
        if len(node.inputs) > 1:
            tags.append("join")
        if graph.out_degree(name) > 1:
            tags.append("fork")
        suffix = f" [dim]({', '.join(tags)})[/]" if tags else ""
        return f"[bold]{name}[/]: {node.strategy.label()}{suffix}"

    def add(parent: Tree, name: str, seen: set[str]) -> None:
        branch = parent.add(label(name))
        if name in seen:
            return
        seen = seen | {name}
        for child in sorted(graph.successors(name)):
            add(branch, child, seen)

    for start in sorted(n for n in graph.nodes if graph.in_degree(n) == 0):
        add(root, start, set())
    return root


def read_trace_events(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ConfigError(f"trace file not found: {path}")
    events = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                raise ConfigError(f"{path}:{number} is not a JSON event line") from None
    return events


def trace_tree(events: list[dict[str, Any]], max_text: int = 70) -> Tree:
    """The thought graph recorded in trace events, as a tree from each prompt."""
    graph: nx.DiGraph = nx.DiGraph()
    for event in events:
        if event.get("event") == "node":
            graph.add_node(
                event["id"],
                kind=event["kind"],
                label=event.get("label", ""),
                data=dict(event.get("data", {})),
            )
            for parent, edge in event.get("parents", []):
                graph.add_edge(parent, event["id"], kind=edge)
        elif event.get("event") == "update" and event["id"] in graph:
            graph.nodes[event["id"]]["data"].update(event.get("data", {}))
        elif event.get("event") == "edge":
            graph.add_edge(event["source"], event["target"], kind=event["kind"])
    answers = [e.get("answer") for e in events if e.get("event") == "result"]
    root = Tree(
        f"[bold]thought graph[/] ({graph.number_of_nodes()} nodes)"
        + (f" · answer: [green]{answers[-1]}[/]" if answers else "")
    )

    def describe(node_id: str) -> str:
        attrs = graph.nodes[node_id]
        data = attrs["data"]
        parts = [f"[bold]{attrs['kind']}[/] {attrs['label']}"]
        if "completion_tokens" in data:
            parts.append(f"[dim]{data['completion_tokens']} tok, {data.get('finish_reason')}[/]")
        if "value" in data:
            parts.append(f"[cyan]{data.get('verifier')}={data['value']:.3g}[/]")
        text = " ".join(str(data.get("text", "")).split())
        if text:
            parts.append(f"“{text[:max_text]}{'…' if len(text) > max_text else ''}”")
        return " · ".join(parts)

    placed: set[str] = set()

    def add(parent: Tree, node_id: str, edge: str) -> None:
        prefix = f"[magenta]{edge}[/] " if edge else ""
        if node_id in placed:
            parent.add(f"{prefix}[dim]→ {node_id} (shown above)[/]")
            return
        placed.add(node_id)
        parents = graph.in_degree(node_id)
        joined = f" [dim](joins {parents})[/]" if parents > 1 else ""
        branch = parent.add(f"{prefix}{describe(node_id)}{joined} [dim]{node_id}[/]")
        for child in graph.successors(node_id):
            add(branch, child, graph.edges[node_id, child]["kind"])

    for start in [n for n in graph.nodes if graph.in_degree(n) == 0]:
        add(root, start, "")
    return root
