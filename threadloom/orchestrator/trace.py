"""The thought graph: everything a run generated, scored and selected, and how they connect."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from typing import Any

import networkx as nx

from threadloom.orchestrator.events import (
    DeltaEvent,
    EdgeEvent,
    NodeEvent,
    ResultEvent,
    TraceEvent,
    UpdateEvent,
    trusted,
)
from threadloom.types import Trace, TraceEdge, TraceNode

EventSink = Callable[[TraceEvent], None]
"""Receives every trace event as it happens (to write JSONL, show progress, export spans)."""

_Node = tuple[str, str, dict[str, Any]]
"""A node's kind, label and data."""


class ThoughtGraph:
    """Records nodes (prompts, generations, candidates, selections) and their edges.

    Nodes and edges are kept as plain dicts, in the order they were added: a run adds a few
    nodes per generation, and a networkx graph costs several times as much to fill and keeps
    views of itself, which only the garbage collector frees. `graph` builds one on demand.

    Every change is also sent to the optional event sink as a typed `TraceEvent`, which is how
    the JSONL event log and live displays follow a run. Events are only built when there is a
    sink, and without validation: everything in them comes from the orchestrator.
    """

    def __init__(self, sink: EventSink | None = None) -> None:
        self._nodes: dict[str, _Node] = {}
        self._edges: dict[str, dict[str, str]] = {}
        """Source id -> target id -> edge kind; one edge per pair, the latest kind wins."""
        self._networkx: nx.DiGraph | None = None
        self._ids = itertools.count()
        self._sink = sink
        self._t0 = time.perf_counter()

    def _now(self) -> float:
        return round(time.perf_counter() - self._t0, 4)

    @property
    def graph(self) -> nx.DiGraph:
        """The thought graph as a networkx DiGraph (node attributes kind, label and data; edge
        attribute kind), built when first asked for and kept up to date from then on.

        It is a view for reading: nodes or edges added to it are not part of the trace.
        """
        if self._networkx is None:
            graph: nx.DiGraph = nx.DiGraph()
            for node_id, (kind, label, data) in self._nodes.items():
                graph.add_node(node_id, kind=kind, label=label, data=data)
            for source, targets in self._edges.items():
                for target, edge_kind in targets.items():
                    graph.add_edge(source, target, kind=edge_kind)
            self._networkx = graph
        return self._networkx

    def _connect(self, source: str, target: str, kind: str) -> None:
        targets = self._edges.get(source)
        if targets is None:
            self._edges[source] = {target: kind}
        else:
            targets[target] = kind
        if self._networkx is not None:
            self._networkx.add_edge(source, target, kind=kind)

    def add(
        self,
        kind: str,
        *,
        label: str = "",
        parents: Iterable[tuple[str, str]] = (),
        **data: Any,
    ) -> str:
        """Add a node; `parents` are (node id, edge kind) pairs. Returns the new node's id."""
        node_id = f"{kind[:3]}{next(self._ids)}"
        # the event keeps `data` as it was; the node's copy grows with later updates
        stored = dict(data) if self._sink is not None else data
        self._nodes[node_id] = (kind, label, stored)
        if self._networkx is not None:
            self._networkx.add_node(node_id, kind=kind, label=label, data=stored)
        edges = []
        for parent, edge_kind in parents:
            if parent in self._nodes:
                self._connect(parent, node_id, edge_kind)
                edges.append((parent, edge_kind))
        if self._sink is not None:
            self._sink(
                NodeEvent.trusted(
                    event="node", t=self._now(), id=node_id, kind=kind, label=label,
                    parents=edges, data=data,
                )
            )
        return node_id

    def update(self, node_id: str, **data: Any) -> None:
        """Add data to an existing node (e.g. its completion once generation ends)."""
        self._nodes[node_id][2].update(data)
        if self._sink is not None:
            self._sink(
                UpdateEvent.trusted(event="update", t=self._now(), id=node_id, data=data)
            )

    def link(self, source: str, target: str, kind: str) -> None:
        """Add an edge between two nodes already in the graph."""
        if source in self._nodes and target in self._nodes:
            self._connect(source, target, kind)
            if self._sink is not None:
                self._sink(
                    EdgeEvent.trusted(
                        event="edge", t=self._now(), source=source, target=target, kind=kind
                    )
                )

    def delta(self, node_id: str, text: str) -> None:
        """A generation's new text (sent to the sink only; the node gets the full text at the
        end)."""
        if self._sink is not None:
            self._sink(
                DeltaEvent.trusted(event="delta", t=self._now(), id=node_id, text=text)
            )

    def finish(self, answer: str | None, *, truncated: bool) -> None:
        """The run's last event: its answer, and whether a budget cut it short."""
        if self._sink is not None:
            self._sink(
                ResultEvent.trusted(
                    event="result", t=self._now(), answer=answer, truncated=truncated
                )
            )

    def to_model(self) -> Trace:
        """The graph as plain data: nodes in the order they were added, and edges grouped by
        source node in that order (as networkx lists them). Built without validation, from
        values the orchestrator made; each node's data is copied, so the Trace does not change
        when the graph does."""
        nodes = tuple(
            trusted(TraceNode, {"id": node_id, "kind": kind, "label": label, "data": dict(data)})
            for node_id, (kind, label, data) in self._nodes.items()
        )
        edges = tuple(
            trusted(TraceEdge, {"source": source, "target": target, "kind": kind})
            for source in self._nodes
            if source in self._edges
            for target, kind in self._edges[source].items()
        )
        return trusted(Trace, {"nodes": nodes, "edges": edges})


def trace_to_graph(trace: Trace) -> nx.DiGraph:
    """Rebuild a networkx graph from a stored Trace."""
    graph: nx.DiGraph = nx.DiGraph()
    for node in trace.nodes:
        graph.add_node(node.id, kind=node.kind, label=node.label, data=node.data)
    for edge in trace.edges:
        graph.add_edge(edge.source, edge.target, kind=edge.kind)
    return graph
