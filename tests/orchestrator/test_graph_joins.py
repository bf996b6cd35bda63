"""Explicit joins: wait all / first / k, cancelling the losing branches on the worker; the
validation of racing joins; reducers as pure functions; the graph package's import order."""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import networkx as nx
import pytest

import threadloom as tl
from threadloom import Candidate, FakeWorker, GraphError, Problem
from threadloom.graph import GraphBuilder, Join, graph_from_dict, load_plan, reducers
from threadloom.orchestrator.trace import trace_to_graph
from threadloom.types import GenerationRequest, Result, Score

Q = Problem(prompt="What is 6 * 7?", answer_format="number")
RACE = (
    "nodes:\n"
    "  sot: {kind: skeleton-of-thought, min_points: 2, max_points: 3}\n"
    "  bon: best-of-n:n=3\n"
    "  final: {join: [sot, bon], reducer: first}\n"
)
SLOW_REPLY = "the answer is " + "slowly " * 40 + "41"


def _is_sot(request: GenerationRequest) -> bool:
    last = (request.messages or ())[-1].content
    return "key points" in last or "Explain this point" in last


def _race_worker(fast: str) -> FakeWorker:
    """Skeleton-of-thought and best-of-n requests told apart; the `fast` side answers at once,
    the other one word per 50 ms (two seconds a reply unless aborted)."""

    def reply(request: GenerationRequest, index: int) -> str:
        last = (request.messages or ())[-1].content
        if "key points" in last:
            return "1. six sevens\n2. multiply\n3. product"
        if "Explain this point" in last:
            return "six times seven is 42" if fast == "sot" else SLOW_REPLY
        return "The answer is 42" if fast == "bon" else SLOW_REPLY

    def delay(request: GenerationRequest) -> float:
        return 0.0 if _is_sot(request) == (fast == "sot") else 0.05

    return FakeWorker(reply, token_delay_s=delay)


def _plan_node(result: Result, name: str) -> str:
    return next(n.id for n in result.trace.nodes if n.kind == "node" and n.data["node"] == name)


def _below(result: Result, name: str) -> set[str]:
    """The trace nodes below a plan node: its generations and whatever grew from them."""
    return nx.descendants(trace_to_graph(result.trace), _plan_node(result, name))


def _generations_under(result: Result, name: str) -> list[tuple[str, dict[str, object]]]:
    graph = trace_to_graph(result.trace)
    return [
        (n, graph.nodes[n]["data"])
        for n in sorted(_below(result, name))
        if graph.nodes[n]["kind"] == "generation"
    ]


@pytest.mark.parametrize(("winner", "loser"), [("bon", "sot"), ("sot", "bon")])
async def test_a_first_join_returns_the_first_branch_and_aborts_the_other(
    tmp_path: Path, winner: str, loser: str
) -> None:
    plan_file = tmp_path / "race.yaml"
    plan_file.write_text(RACE)
    worker = _race_worker(fast=winner)
    result = await tl.arun(Q, load_plan(plan_file), worker=worker)

    won = _below(result, winner)
    assert result.candidates and all(c.node_id in won for c in result.candidates)
    if winner == "bon":
        assert len(result.candidates) == 3 and result.answer == "42"
    else:
        assert [c.metadata.get("mode") for c in result.candidates] == ["skeleton"]

    lost = _generations_under(result, loser)
    assert lost, "the losing branch had started generating"
    assert all(data["finish_reason"] == "abort" for _, data in lost)
    assert sorted(worker.aborted) == sorted(str(data["request_id"]) for _, data in lost)
    assert worker.in_flight == 0
    assert all(int(data["completion_tokens"]) < 40 for _, data in lost)  # type: ignore[call-overload]

    nodes = {n.id: n for n in result.trace.nodes}
    assert nodes[_plan_node(result, "final")].data["cancelled_inputs"] == [loser]
    assert nodes[_plan_node(result, loser)].data["cancelled"] is True
    assert "cancelled" not in nodes[_plan_node(result, winner)].data


def test_the_race_plan_loads_without_a_nodes_key_and_round_trips(tmp_path: Path) -> None:
    flat = tmp_path / "flat.yaml"
    flat.write_text(
        "sot: skeleton-of-thought\nbon: best-of-n:n=4\nfinal: {join: [sot, bon], reducer: first}\n"
    )
    plan = load_plan(flat)
    final = plan.nodes["final"]
    assert isinstance(final, Join) and final.wait == "first" and final.races
    assert final.inputs == ["sot", "bon"] and final.strategy.kind == "concat"
    again = tmp_path / "again.json"
    again.write_text(plan.model_dump_json())
    reloaded = load_plan(again).nodes["final"]
    assert isinstance(reloaded, Join) and reloaded.wait == "first"


def _by_temperature(request: GenerationRequest, index: int) -> str:
    return f"branch {round(request.params.temperature * 10)}"


async def test_wait_k_keeps_the_first_k_branches_and_cancels_the_rest() -> None:
    delays = {1: 0.0, 2: 0.002, 3: 0.05}

    def delay(request: GenerationRequest) -> float:
        return delays[round(request.params.temperature * 10)]

    worker = FakeWorker(
        lambda request, i: _by_temperature(request, i) + " and then" + " more" * 40,
        token_delay_s=delay,
    )
    plan = (
        GraphBuilder()
        .add("a", "single:temperature=0.1")
        .add("b", "single:temperature=0.2")
        .add("c", "single:temperature=0.3")
        .join("final", ["c", "a", "b"], wait=2)
        .build()
    )
    result = await tl.arun(Q, plan, worker=worker)
    assert [c.text.split(" and")[0] for c in result.candidates] == ["branch 1", "branch 2"]
    lost = _generations_under(result, "c")
    assert [data["finish_reason"] for _, data in lost] == ["abort"]
    assert worker.aborted == [lost[0][1]["request_id"]]
    assert worker.in_flight == 0


async def test_a_branch_that_ends_without_candidates_does_not_win_the_race() -> None:
    worker = FakeWorker(lambda r, i: _by_temperature(r, i), token_delay_s=0.001)
    plan = graph_from_dict(
        {
            "nodes": {
                "empty": {
                    "strategy": "best-of-n:n=2,temperature=0.1",
                    "budget": {"max_generations": 0},
                },
                "slow": "single:temperature=0.2",
                "final": {"join": ["empty", "slow"], "wait": "first"},
            }
        }
    )
    result = await tl.arun(Q, plan, worker=worker)
    assert [c.text for c in result.candidates] == ["branch 2"]


async def test_a_race_after_a_fork_cancels_only_the_losing_branch() -> None:
    def reply(request: GenerationRequest, index: int) -> str:
        return " quick 42" if request.params.temperature == 0.1 else " slow" * 40 + " 41"

    def delay(request: GenerationRequest) -> float:
        return 0.0 if request.params.temperature in (None, 0.1) else 0.05

    worker = FakeWorker(
        lambda r, i: "draft" if not r.prefix else reply(r, i), token_delay_s=delay
    )
    plan = (
        GraphBuilder()
        .add("draft", "single")
        .add("quick", "single:temperature=0.1", inputs="draft", map=True)
        .add("careful", "single:temperature=0.2", inputs="draft", map=True)
        .join("final", ["careful", "quick"], reducer="first")
        .build()
    )
    result = await tl.arun(Q, plan, worker=worker)
    assert [c.text for c in result.candidates] == ["draft quick 42"]
    assert [d["finish_reason"] for _, d in _generations_under(result, "careful")] == ["abort"]
    finishes = sorted(str(d["finish_reason"]) for _, d in _generations_under(result, "draft"))
    assert finishes == ["abort", "stop", "stop"]  # the draft, the quick copy; the careful one


async def test_wait_all_joins_every_input_in_input_order() -> None:
    worker = FakeWorker(_by_temperature, token_delay_s=lambda r: 0.03 - r.params.temperature / 10)
    plan = (
        GraphBuilder()
        .add("a", "single:temperature=0.1")
        .add("b", "single:temperature=0.2")
        .join("final", ["a", "b"])
        .build()
    )
    result = await tl.arun(Q, plan, worker=worker)
    assert [c.text for c in result.candidates] == ["branch 1", "branch 2"]
    assert worker.aborted == []


def test_racing_joins_must_join_sibling_branches() -> None:
    cases = [
        (
            {
                "a": "single",
                "b": {"strategy": "single", "inputs": ["a"], "map": True},
                "final": {"join": ["a", "b"], "wait": "first"},
            },
            r"a first-join's inputs must be siblings of one fork: 'a' and 'b' share 'a'",
        ),
        (
            {
                "p": "single",
                "q": "single",
                "a": {"strategy": "concat", "inputs": ["p", "q"]},
                "b": {"strategy": "concat", "inputs": ["p"]},
                "final": {"join": ["a", "b"], "reducer": "first"},
            },
            r"siblings of one fork: 'a' and 'b' share 'p' below their fork \(the problem\)",
        ),
        (
            {
                "x": "single",
                "a": {"strategy": "single", "inputs": ["x"], "map": True},
                "b": {"strategy": "single", "inputs": ["x"], "map": True},
                "c": {"strategy": "concat", "inputs": ["a"]},
                "race": {"join": ["a", "b"], "wait": 1},
                "final": {"join": ["race", "c"]},
            },
            r"'a' in the branch of 'a' also feeds \['c'\]",
        ),
        ({"a": "single", "final": {"join": ["a"], "wait": 2}}, "waits for 2 inputs but has only 1"),
        (
            {"a": "single", "b": "single", "final": {"join": ["a", "b"], "reducer": "single"}},
            "does not combine candidates; use first, concat, vote or select",
        ),
        (
            {"a": "single", "f": {"join": ["a"], "reducer": "first", "wait": "all"}},
            "reducer 'first' keeps the first branch to finish, so it cannot wait for 'all'",
        ),
        ({"a": "single", "f": {"join": ["a"], "map": True}}, "join 'f' cannot map"),
        ({"a": "single", "f": {"join": ["a"], "wait": "most"}}, "node 'f': wait"),
        ({"a": "single", "f": {"join": []}}, "node 'f': join"),
    ]
    for plan, message in cases:
        with pytest.raises(GraphError, match=message):
            graph_from_dict({"nodes": plan})
    with pytest.raises(tl.ConfigError):
        GraphBuilder().add("a", "single").add("b", "single").join("j", ["a", "b"], wait=3).build()


def test_a_race_over_branches_of_a_shared_fork_is_valid() -> None:
    plan = graph_from_dict(
        {
            "x": "single",
            "a": {"strategy": "single", "inputs": ["x"], "map": True},
            "a2": {"strategy": "vote", "inputs": ["a"]},
            "b": {"strategy": "single", "inputs": ["x"], "map": True},
            "final": {"join": ["a2", "b"], "wait": "first"},
        }
    )
    final = plan.nodes["final"]
    assert isinstance(final, Join) and final.races and plan.sink == "final"


# ----- reducers are pure functions -----------------------------------------------------------


def _candidate(answer: str, logprob: float, score: float | None = None) -> Candidate:
    scores = {} if score is None else {"judge": Score(value=score)}
    return Candidate(text=answer, answer=answer, mean_logprob=logprob, scores=scores)


def test_vote_select_and_concat_need_no_run() -> None:
    a, b, c, d = (
        _candidate("7", -0.1, 0.9),
        _candidate("42", -0.5, 0.2),
        _candidate("42.0", -0.2, 0.1),
        Candidate(text="no answer"),
    )
    assert reducers.concat([a, b, c, d]) == [a, b, c, d]

    outcome = reducers.vote([a, b, c, d], "number")
    assert outcome.ranked == [c, b, a, d]  # the 42s win, the likelier first; d has no vote
    assert [len(g.members) for g in outcome.groups] == [2, 1]

    weighted = reducers.vote([a, b, c, d], "number", weight_by="judge")
    assert weighted.ranked[0] is a  # 0.9 outweighs 0.2 + 0.1

    assert reducers.select([b, c, a], "judge") == [a, b, c]
    e, f, g = _candidate("1", -0.5), _candidate("2", -0.1), _candidate("3", -0.3)
    assert reducers.select([e, f, g], None) == [f, g, e]  # unscored: by log-probability


# ----- one place, no import cycle --------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
GRAPH_MODULES = [
    "threadloom.graph",
    "threadloom.graph.nodes",
    "threadloom.graph.validation",
    "threadloom.graph.executor",
    "threadloom.graph.plan",
    "threadloom.graph.builder",
    "threadloom.graph.files",
    "threadloom.graph.reducers",
    "threadloom.strategies.reducers",
    "threadloom.orchestrator.plan",
    "threadloom.orchestrator.trace",
    "threadloom.orchestrator.events",
    "threadloom.orchestrator.streaming",
]


@pytest.mark.slow
def test_each_graph_module_imports_first_in_a_fresh_interpreter() -> None:
    script = "import importlib, sys\nimportlib.import_module(sys.argv[1])\n"
    for module in GRAPH_MODULES:
        done = subprocess.run(
            [sys.executable, "-c", script, module], capture_output=True, text=True, cwd=ROOT
        )
        assert done.returncode == 0, f"{module}: {done.stderr[-800:]}"


def _runtime_imports(path: Path) -> set[str]:
    """Modules a file imports when it is loaded (not under TYPE_CHECKING, not in functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for statement in tree.body:
        if isinstance(statement, ast.If) and "TYPE_CHECKING" in ast.unparse(statement.test):
            continue
        for node in ast.walk(statement):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                break
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return found


def test_no_import_cycle_among_graph_orchestrator_and_strategy_modules() -> None:
    graph: nx.DiGraph = nx.DiGraph()
    for folder in ("graph", "orchestrator", "strategies"):
        for path in (ROOT / "threadloom" / folder).glob("*.py"):
            name = f"threadloom.{folder}.{path.stem}".removesuffix(".__init__")
            graph.add_node(name)
            for target in _runtime_imports(path):
                if target.startswith(("threadloom.graph", "threadloom.orchestrator",
                                      "threadloom.strategies")):
                    graph.add_edge(name, target)
    assert nx.is_directed_acyclic_graph(graph), nx.find_cycle(graph)
    assert not any(t.startswith("threadloom.orchestrator") for t in _graph_imports())
    assert not (ROOT / "threadloom" / "orchestrator" / "graph.py").exists()
    assert not (ROOT / "threadloom" / "strategies" / "graph.py").exists()


def _graph_imports() -> set[str]:
    return set().union(*(_runtime_imports(p) for p in (ROOT / "threadloom/graph").glob("*.py")))


async def test_a_cancelled_loser_never_starts_a_node_still_waiting_for_inputs() -> None:
    def delay(request: GenerationRequest) -> float:
        return 0.0 if request.params.temperature == 0.1 else 0.05

    worker = FakeWorker(lambda r, i: "x " * 30, token_delay_s=delay)
    plan = (
        GraphBuilder()
        .add("fast", "single:temperature=0.1")
        .add("slow", "single:temperature=0.2")
        .add("after", "single:temperature=0.3", inputs="slow", map=True)
        .join("final", ["fast", "after"], reducer="first")
        .build()
    )
    result = await tl.arun(Q, plan, worker=worker)
    assert len(result.candidates) == 1
    assert not any(r.params.temperature == 0.3 for r in worker.requests)
    assert [d["finish_reason"] for _, d in _generations_under(result, "slow")] == ["abort"]
    await asyncio.sleep(0)
    assert worker.in_flight == 0


# ----- the real bundled model ------------------------------------------------------------------


@pytest.mark.slow
async def test_a_first_join_on_the_real_model_aborts_the_loser_in_the_engine(
    llama_worker: Any,
) -> None:
    plan = graph_from_dict(
        {
            "sot": {
                "kind": "skeleton-of-thought",
                "min_points": 2,
                "max_points": 3,
                "skeleton_tokens": 32,
                "point_tokens": 24,
            },
            "bon": "best-of-n:n=2,max_tokens=300,temperature=0.8",
            "final": {"join": ["sot", "bon"], "reducer": "first"},
        }
    )
    problem = Problem(prompt="Give three tips for keeping a lighthouse lamp clean.")
    result = await tl.arun(problem, plan, worker=llama_worker, seed=3)

    final = next(n for n in result.trace.nodes if n.data.get("node") == "final")
    (loser,) = final.data["cancelled_inputs"]
    winner = ({"sot", "bon"} - {loser}).pop()
    won = _below(result, winner)
    assert result.candidates and all(c.node_id in won for c in result.candidates)
    lost = _generations_under(result, loser)
    assert all("finish_reason" in data for _, data in lost)
    aborted = [data for _, data in lost if data["finish_reason"] == "abort"]
    assert aborted, "the losing branch was still generating when the winner finished"
    assert all(int(str(data["completion_tokens"])) < 300 for data in aborted)
    # the engine dropped the aborted sequences at its next step and decodes nothing more
    for _ in range(250):
        if llama_worker.stats()["live_sequences"] == 0:
            break
        await asyncio.sleep(0.02)
    stats = llama_worker.stats()
    assert stats["live_sequences"] == 0 and stats["queued_requests"] == 0
    decoded = stats["decoded_tokens"]
    await asyncio.sleep(0.3)
    assert llama_worker.stats()["decoded_tokens"] == decoded


def test_every_example_plan_loads() -> None:
    plans = [p for p in (ROOT / "examples").glob("*.yaml") if "nodes:" in p.read_text()]
    assert {p.name for p in plans} >= {"sot_vs_bon.yaml", "sot_or_bon_first.yaml"}
    for path in plans:
        assert load_plan(path).sink == "final"
    race = load_plan(ROOT / "examples" / "sot_or_bon_first.yaml").nodes["final"]
    assert isinstance(race, Join) and race.races and race.inputs == ["sot", "bon"]


async def test_a_nested_graph_written_in_shorthand_races_inside_its_node() -> None:
    def delay(request: GenerationRequest) -> float:
        return 0.0 if request.params.temperature == 0.1 else 0.05

    plan = graph_from_dict(
        {
            "inner": {
                "kind": "graph",
                "nodes": {
                    "quick": "single:temperature=0.1",
                    "slow": {"kind": "single", "temperature": 0.2},
                    "final": {"join": ["quick", "slow"], "reducer": "first"},
                },
            },
            "other": "single:temperature=0.1",
            "final": {"join": ["inner", "other"]},
        }
    )
    worker = FakeWorker(lambda r, i: _by_temperature(r, i) + " x" * 30, token_delay_s=delay)
    result = await tl.arun(Q, plan, worker=worker)
    assert [c.text.split(" x")[0] for c in result.candidates] == ["branch 1", "branch 1"]
    assert len(worker.aborted) == 1 and worker.in_flight == 0
