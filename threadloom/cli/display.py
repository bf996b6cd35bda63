"""Terminal renderings: a strategy graph, and a thought graph read back from a JSONL trace."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import networkx as nx
from rich.text import Text
from rich.tree import Tree

from threadloom.errors import ConfigError
from threadloom.graph.nodes import Join
from threadloom.graph.plan import Graph
from threadloom.orchestrator.events import (
    EdgeEvent,
    NodeEvent,
    ResultEvent,
    TraceEvent,
    UpdateEvent,
    parse_event,
)
from threadloom.unicode_text import replace_lone_surrogates


def graph_tree(plan: Graph) -> Tree:
    """The plan as a tree from its start nodes; a join shows under each input, marked."""
    graph: nx.DiGraph = nx.DiGraph()
    for name, node in plan.nodes.items():
        graph.add_node(name)
        for source in node.inputs:
            graph.add_edge(source, name)
    root = Tree(
        Text.assemble(
            ("strategy graph", "bold"),
            f" ({len(plan.nodes)} nodes, result from ",
            (_plain(plan.sink), "green"),
            ")",
        )
    )

    def label(name: str) -> Text:
        node = plan.nodes[name]
        tags = []
        if node.map:
            tags.append("map")
        if isinstance(node, Join) and node.races:
            tags.append(f"race: keeps {node.needed} of {len(node.inputs)}")
        elif len(node.inputs) > 1:
            tags.append("join")
        if graph.out_degree(name) > 1:
            tags.append("fork")
        line = Text.assemble((_plain(name), "bold"), ": ", _plain(node.label()))
        if tags:
            line.append(f" ({', '.join(tags)})", style="dim")
        return line

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


def read_trace_events(path: Path) -> list[TraceEvent]:
    """The events of a JSONL trace file (bytes that are not UTF-8 read as U+FFFD).

    Damaged events are repaired where they still mean something, and left out otherwise (see
    `parse_event`).

    Raises:
        ConfigError: The file is missing, or a line is not a JSON object.
    """
    if not path.is_file():
        raise ConfigError(f"trace file not found: {path}")
    events = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                raise ConfigError(f"{path}:{number} is not a JSON event line") from None
            if not isinstance(raw, dict):
                raise ConfigError(f"{path}:{number} is not a JSON object (a trace event)")
            event = parse_event(raw)
            if event is not None:
                events.append(event)
    return events


def trace_tree(events: Iterable[TraceEvent | Mapping[str, Any]], max_text: int = 70) -> Tree:
    """The thought graph recorded in trace events, as a tree from each prompt.

    Every string from the trace (model text, labels, answers) is shown as plain text, so text
    that looks like markup prints as written; events given as mappings are read with
    `parse_event`, and those that are not events are skipped.
    """
    typed = [_typed(e) for e in events]
    graph = _thought_graph([e for e in typed if e is not None])
    answers = [e.answer for e in typed if isinstance(e, ResultEvent)]
    title = Text.assemble(("thought graph", "bold"), f" ({graph.number_of_nodes()} nodes)")
    if answers:
        title.append(" · answer: ")
        title.append(_plain(answers[-1]), style="green")
    root = Tree(title)

    def describe(node_id: str) -> Text:
        attrs = graph.nodes[node_id]
        data = attrs["data"]
        line = Text.assemble((_plain(attrs["kind"]), "bold"), " ", _plain(attrs["label"]))
        if "completion_tokens" in data:
            line.append(" · ")
            line.append(
                f"{_plain(data['completion_tokens'])} tok, {_plain(data.get('finish_reason'))}",
                style="dim",
            )
        if data.get("cancelled"):
            line.append(" · ")
            line.append("cancelled", style="yellow")
        if "value" in data:
            line.append(" · ")
            shown = "no reference" if data.get("judged") is False else _number(data["value"])
            line.append(f"{_plain(data.get('verifier'))}={shown}", style="cyan")
        text = " ".join(_plain(data.get("text", "")).split())
        if text:
            line.append(f" · “{text[:max_text]}{'…' if len(text) > max_text else ''}”")
        return line

    placed: set[str] = set()

    def add(parent: Tree, node_id: str, edge: str) -> None:
        line = Text.assemble((edge, "magenta"), " ") if edge else Text()
        if node_id in placed:
            line.append(f"→ {node_id} (shown above)", style="dim")
            parent.add(line)
            return
        placed.add(node_id)
        line.append_text(describe(node_id))
        parents = graph.in_degree(node_id)
        if parents > 1:
            line.append(f" (joins {parents})", style="dim")
        line.append(f" {node_id}", style="dim")
        branch = parent.add(line)
        for child in graph.successors(node_id):
            add(branch, child, _plain(graph.edges[node_id, child].get("kind", "")))

    for start in [n for n in graph.nodes if graph.in_degree(n) == 0]:
        add(root, start, "")
    return root


def _typed(event: TraceEvent | Mapping[str, Any]) -> TraceEvent | None:
    return parse_event(event) if isinstance(event, Mapping) else event


def _thought_graph(events: list[TraceEvent]) -> nx.DiGraph:
    """The graph the events describe (a node named only by an edge shows as '?')."""
    graph: nx.DiGraph = nx.DiGraph()

    def ensure(node_id: str) -> None:
        if node_id not in graph:
            graph.add_node(node_id, kind="?", label="", data={})

    for event in events:
        if isinstance(event, NodeEvent):
            node_id = _plain(event.id)
            ensure(node_id)
            graph.nodes[node_id].update(
                kind=_plain(event.kind), label=_plain(event.label), data=dict(event.data)
            )
            for parent, kind in event.parents:
                ensure(_plain(parent))
                graph.add_edge(_plain(parent), node_id, kind=_plain(kind))
        elif isinstance(event, UpdateEvent) and _plain(event.id) in graph:
            graph.nodes[_plain(event.id)]["data"].update(event.data)
        elif isinstance(event, EdgeEvent):
            source, target = _plain(event.source), _plain(event.target)
            ensure(source)
            ensure(target)
            graph.add_edge(source, target, kind=_plain(event.kind))
    return graph


def _plain(value: object) -> str:
    """Any trace value as a string that can be printed (None as '', lone surrogates as U+FFFD)."""
    return "" if value is None else replace_lone_surrogates(str(value))


def _number(value: object) -> str:
    """A score for display: 3 significant digits, or the value as written if not a number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.3g}"
    return _plain(value)
