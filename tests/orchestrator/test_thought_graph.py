"""The thought graph's own records: what `to_model` and `graph` hold, that the stored Trace is
what validation would make of it, and that a run's trace leaves nothing for the garbage
collector."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import networkx as nx
import pytest

import threadloom as tl
from threadloom.orchestrator.trace import ThoughtGraph, trace_to_graph
from threadloom.types import Trace, TraceEdge, TraceNode


def _sample_graph() -> tuple[ThoughtGraph, dict[str, str]]:
    graph = ThoughtGraph()
    ids: dict[str, str] = {}
    ids["prompt"] = graph.add("prompt", label="q")
    ids["a"] = graph.add("generation", label="a", parents=[(ids["prompt"], "fork")], n=1)
    ids["b"] = graph.add(
        "generation", label="b", parents=[(ids["prompt"], "fork"), ("gone", "fork")], n=2
    )
    ids["score"] = graph.add("score", parents=[(ids["b"], "score")], value=0.5)
    # an edge added before one of an earlier node's: edges still list by source node order
    graph.link(ids["b"], ids["a"], "merge")
    ids["join"] = graph.add("join", parents=[(ids["a"], "join"), (ids["b"], "join")])
    graph.link(ids["prompt"], ids["join"], "select")
    graph.link(ids["b"], ids["a"], "join")  # the same pair again: the latest kind wins
    graph.link(ids["a"], "gone", "join")  # not a node: no edge
    graph.update(ids["a"], text="done", finish_reason="stop")
    return graph, ids


def _counting(init: Callable[..., None], calls: list[str]) -> Callable[..., None]:
    def counting(self: object, **data: Any) -> None:
        calls.append(type(self).__name__)
        init(self, **data)

    return counting


def test_to_model_lists_nodes_in_order_and_edges_by_source_node() -> None:
    graph, ids = _sample_graph()
    trace = graph.to_model()
    assert [(n.id, n.kind, n.label) for n in trace.nodes] == [
        (ids["prompt"], "prompt", "q"),
        (ids["a"], "generation", "a"),
        (ids["b"], "generation", "b"),
        (ids["score"], "score", ""),
        (ids["join"], "join", ""),
    ]
    assert trace.nodes[1].data == {"n": 1, "text": "done", "finish_reason": "stop"}
    assert trace.nodes[2].data == {"n": 2}
    assert [(e.source, e.target, e.kind) for e in trace.edges] == [
        (ids["prompt"], ids["a"], "fork"),
        (ids["prompt"], ids["b"], "fork"),
        (ids["prompt"], ids["join"], "select"),
        (ids["a"], ids["join"], "join"),
        (ids["b"], ids["score"], "score"),
        (ids["b"], ids["a"], "join"),
        (ids["b"], ids["join"], "join"),
    ]


def test_the_networkx_graph_holds_what_the_trace_holds() -> None:
    graph, _ = _sample_graph()
    trace = graph.to_model()
    built = graph.graph
    rebuilt = trace_to_graph(trace)
    assert list(built.nodes(data=True)) == list(rebuilt.nodes(data=True))
    assert list(built.edges(data=True)) == list(rebuilt.edges(data=True))


def test_the_networkx_graph_follows_changes_made_after_it_was_built() -> None:
    graph, ids = _sample_graph()
    built = graph.graph
    late = graph.add("select", label="late", parents=[(ids["join"], "select")], k=1)
    graph.update(ids["b"], text="b done")
    graph.link(ids["score"], late, "select")
    assert graph.graph is built
    assert built.nodes[late] == {"kind": "select", "label": "late", "data": {"k": 1}}
    assert built.nodes[ids["b"]]["data"] == {"n": 2, "text": "b done"}
    assert built.edges[ids["join"], late] == {"kind": "select"}
    assert built.edges[ids["score"], late] == {"kind": "select"}
    assert list(built.edges(data=True)) == list(trace_to_graph(graph.to_model()).edges(data=True))


def test_a_stored_trace_does_not_change_with_the_graph() -> None:
    graph, ids = _sample_graph()
    trace = graph.to_model()
    graph.update(ids["a"], text="rewritten")
    graph.add("generation", parents=[(ids["a"], "continue")])
    assert trace.nodes[1].data["text"] == "done"
    assert len(trace.nodes) == 5 and len(trace.edges) == 7


def test_the_trace_is_built_unvalidated_and_is_what_validation_makes_of_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    graph, _ = _sample_graph()
    validated: list[str] = []
    for cls in (Trace, TraceNode, TraceEdge):
        monkeypatch.setattr(cls, "__init__", _counting(cls.__init__, validated))
    trace = graph.to_model()
    assert validated == []
    dumped = trace.model_dump(mode="json")
    again = Trace.model_validate(dumped)
    assert again == trace
    assert again.model_dump(mode="json") == dumped


async def test_a_run_result_trace_reads_back_equal_from_json() -> None:
    result = await tl.arun(
        "What is 6 * 7?", "best-of-n", n=3, worker=tl.FakeWorker(["It is 42"]), verifier="numeric"
    )
    kinds = [n.kind for n in result.trace.nodes]
    assert kinds.count("generation") == 3 and kinds.count("score") == 3
    assert tl.Result.model_validate_json(result.model_dump_json()).trace == result.trace


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@pytest.mark.parametrize("strategy", ["single", "best-of-n", "self-consistency"])
async def test_a_runs_trace_is_freed_without_the_garbage_collector(
    strategy: str, collector_off: None
) -> None:
    options = {} if strategy == "single" else {"n": 4}
    result = await tl.arun("What is 6 * 7?", strategy, worker=tl.FakeWorker(["42"]), **options)
    assert result.answer == "42"
    del result
    gc.collect()
    left = [o for o in gc.garbage if isinstance(o, ThoughtGraph | nx.Graph)]
    assert left == []
