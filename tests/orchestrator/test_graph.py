"""Strategy graphs: validation, execution order, concurrency, map/join, budgets, plans."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import threadloom as tl
from threadloom import Budget, FakeWorker, GraphError, Problem
from threadloom.orchestrator.plan import StrategyGraph, graph_from_dict, load_plan

Q = Problem(prompt="What is 6 * 7?", answer_format="number")


def test_validation_errors_name_the_node() -> None:
    cases = [
        ({"nodes": {}}, "no nodes"),
        ({"nodes": {"a": "single", "b": "single"}}, "exactly one final node"),
        (
            {
                "nodes": {
                    "a": {"strategy": "vote", "inputs": ["b"]},
                    "b": {"strategy": "vote", "inputs": ["a"]},
                    "c": "single",
                }
            },
            "cycle: a -> b -> a",
        ),
        ({"nodes": {"a": "single", "b": {"strategy": "vote", "inputs": ["zz"]}}}, "unknown node"),
        (
            {"nodes": {"a": "single", "b": {"strategy": "single", "inputs": ["a"]}}},
            "node 'b' receives inputs",
        ),
        ({"nodes": {"a": "vote"}}, "without inputs"),
        (
            {
                "nodes": {
                    "a": "single",
                    "b": "single",
                    "c": {"strategy": "single", "inputs": ["a", "b"], "map": True},
                }
            },
            "exactly one input",
        ),
        ({"nodes": {"a": "no-such-kind"}}, "valid strategies"),
        ({"nodes": {"a": {"strategy": {"kind": "best-of-n", "n": -1}}}}, "node 'a'"),
        ({"nodes": {"a": {"strategy": "single", "colour": "red"}}}, "node 'a'"),
    ]
    for plan, message in cases:
        with pytest.raises(GraphError, match=message):
            graph_from_dict(plan)


def test_fork_and_join_through_intermediate_nodes() -> None:
    plan = {
        "nodes": {
            "a": "single",
            "b": {"strategy": "concat", "inputs": ["a"]},
            "c": {"strategy": "concat", "inputs": ["a"]},
            "d": {"strategy": "vote", "inputs": ["b", "c"]},
        }
    }
    assert graph_from_dict(plan).sink == "d"


async def test_independent_nodes_run_concurrently_and_joins_wait() -> None:
    worker = FakeWorker(["one two three four five six 42"], token_delay_s=0.01)
    plan = (
        StrategyGraph()
        .add("a", "best-of-n:n=2")
        .add("b", "best-of-n:n=2")
        .add("c", "single")
        .add("final", "vote", inputs=["a", "b", "c"])
        .build()
    )
    started = time.perf_counter()
    result = await tl.arun(Q, plan, worker=worker)
    elapsed = time.perf_counter() - started
    assert result.answer == "42"
    assert len(result.candidates) == 5
    assert result.usage.generations == 5
    # 7 tokens at 10 ms each: sequential branches would take three times as long
    assert elapsed < 3 * 7 * 0.01
    node_labels = [n.label for n in result.trace.nodes if n.kind == "node"]
    assert node_labels[-1].startswith("final")


async def test_map_runs_one_copy_per_candidate_and_continues_its_text() -> None:
    def reply(request, index):  # type: ignore[no-untyped-def]
        return " and more" if request.prefix else f"draft{index}"

    worker = FakeWorker(reply)
    plan = (
        StrategyGraph()
        .add("drafts", "best-of-n:n=3")
        .add("extend", "single", inputs="drafts", map=True)
        .build()
    )
    result = await tl.arun(Q, plan, worker=worker)
    texts = sorted(c.text for c in result.candidates)
    assert texts == ["draft0 and more", "draft1 and more", "draft2 and more"]
    prefixed = [r for r in worker.requests if r.prefix]
    assert sorted(r.prefix for r in prefixed) == ["draft0", "draft1", "draft2"]


async def test_node_budget_truncates_that_node_only() -> None:
    plan = graph_from_dict(
        {
            "nodes": {
                "small": {"strategy": "best-of-n:n=8", "budget": {"max_generations": 2}},
                "big": "best-of-n:n=3",
                "final": {"strategy": "concat", "inputs": ["small", "big"]},
            }
        }
    )
    result = await tl.arun(Q, plan, worker=FakeWorker(["42"]))
    assert len(result.candidates) == 5
    assert result.truncated


async def test_nested_graph_and_nested_strategy() -> None:
    inner = (
        StrategyGraph()
        .add("x", "single")
        .add("y", "single")
        .add("v", "vote", inputs=["x", "y"])
        .build()
    )
    plan = (
        StrategyGraph()
        .add("inner", inner)
        .add("ffs", {"kind": "first-finish", "n": 2})
        .add("final", "select", inputs=["inner", "ffs"])
        .build()
    )
    result = await tl.arun(Q, plan, worker=FakeWorker(["7 * 6 = 42"]))
    assert result.answer == "42"
    assert result.usage.generations == 4


async def test_run_budget_stops_the_graph_without_raising() -> None:
    plan = (
        StrategyGraph()
        .add("a", "best-of-n:n=6")
        .add("b", "best-of-n:n=6")
        .add("final", "concat", inputs=["a", "b"])
        .build()
    )
    result = await tl.arun(Q, plan, worker=FakeWorker(["42"]), budget=Budget(max_generations=4))
    assert result.usage.generations == 4
    assert result.truncated


def test_yaml_and_json_plans(tmp_path: Path) -> None:
    yaml_plan = tmp_path / "plan.yaml"
    yaml_plan.write_text(
        "nodes:\n"
        "  a: {strategy: best-of-n:n=2}\n"
        "  b: {kind: self-consistency, n: 3}\n"
        "  final: {strategy: vote, inputs: [a, b]}\n"
    )
    graph = load_plan(yaml_plan)
    assert graph.sink == "final"
    assert graph.nodes["b"].strategy.n == 3  # type: ignore[attr-defined]
    json_plan = tmp_path / "plan.json"
    json_plan.write_text(graph.model_dump_json())
    again = load_plan(json_plan)
    assert again.nodes.keys() == graph.nodes.keys()
    broken = tmp_path / "broken.yaml"
    broken.write_text("nodes: [unclosed")
    with pytest.raises(GraphError, match="not valid YAML"):
        load_plan(broken)


async def test_a_failing_node_cancels_its_siblings() -> None:
    class Boom(FakeWorker):
        async def stream(self, request):  # type: ignore[no-untyped-def, override]
            if "boom" in (request.messages or ())[-1].content:
                raise tl.WorkerDead("gone")
            async for delta in super().stream(request):
                yield delta

    worker = Boom(["x " * 200], token_delay_s=0.005)
    plan = (
        StrategyGraph()
        .add("slow", "single")
        .add("bad", "single")
        .add("final", "concat", inputs=["slow", "bad"])
        .build()
    )
    with pytest.raises(tl.WorkerDead):
        await tl.arun(Problem(prompt="boom"), plan, worker=worker)
    await asyncio.sleep(0.05)
    assert worker.in_flight == 0
