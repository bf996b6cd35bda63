"""The thought graph: a networkx DiGraph of everything a run generated, scored and selected."""

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
)
from threadloom.types import Trace, TraceEdge, TraceNode

EventSink = Callable[[TraceEvent], None]
"""Receives every trace event as it happens (to write JSONL, show progress, export spans)."""


class ThoughtGraph:
    """Records nodes (prompts, generations, candidates, selections) and their edges.

    Every change is also sent to the optional event sink as a typed `TraceEvent`, which is how
    the JSONL event log and live displays follow a run. Events are only built when there is a
    sink, and without validation: everything in them comes from the orchestrator.
    """

    def __init__(self, sink: EventSink | None = None) -> None:
        self.graph: nx.DiGraph = nx.DiGraph()
        self._ids = itertools.count()
        self._sink = sink
        self._t0 = time.perf_counter()

    def _now(self) -> float:
        return round(time.perf_counter() - self._t0, 4)

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
        self.graph.add_node(node_id, kind=kind, label=label, data=dict(data))
        edges = []
        for parent, edge_kind in parents:
            if parent in self.graph:
                self.graph.add_edge(parent, node_id, kind=edge_kind)
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
        self.graph.nodes[node_id]["data"].update(data)
        if self._sink is not None:
            self._sink(
                UpdateEvent.trusted(event="update", t=self._now(), id=node_id, data=data)
            )

    def link(self, source: str, target: str, kind: str) -> None:
        """Add an edge between two nodes already in the graph."""
        if source in self.graph and target in self.graph:
            self.graph.add_edge(source, target, kind=kind)
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
        nodes = tuple(
            TraceNode(id=n, kind=a["kind"], label=a["label"], data=a["data"])
            for n, a in self.graph.nodes(data=True)
        )
        edges = tuple(
            TraceEdge(source=u, target=v, kind=a["kind"]) for u, v, a in self.graph.edges(data=True)
        )
        return Trace(nodes=nodes, edges=edges)


def trace_to_graph(trace: Trace) -> nx.DiGraph:
    """Rebuild a networkx graph from a stored Trace."""
    graph: nx.DiGraph = nx.DiGraph()
    for node in trace.nodes:
        graph.add_node(node.id, kind=node.kind, label=node.label, data=node.data)
    for edge in trace.edges:
        graph.add_edge(edge.source, edge.target, kind=edge.kind)
    return graph
