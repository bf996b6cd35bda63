"""Strategy graphs: validation and execution of a DAG of strategy nodes.

Vocabulary (as in pydantic_graph):

- fork: several nodes list the same input; each gets the same candidates (broadcast).
- map: a node with ``map: true`` runs one copy of its strategy per input candidate, in parallel;
  a generator copy continues that candidate's text.
- join: a node with several inputs receives their candidates concatenated; its strategy is the
  reducer (vote, select, concat, first-finish of inputs ...).

A node with no inputs starts from the problem. Exactly one node has no consumers: its output is
the graph's result. Nodes run as soon as their inputs are ready, concurrently.

Every join is dominated by a fork by construction: a join names each of its inputs and waits
for all of them, and in an acyclic graph the nearest node through which all of a join's
inputs pass (the problem itself, at the top) necessarily feeds several branches.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import networkx as nx
from pydantic import BaseModel, ConfigDict, Field

from threadloom.errors import BudgetExhausted, GraphError
from threadloom.strategies.registry import StrategyField
from threadloom.types import Budget, Candidate

if TYPE_CHECKING:
    from threadloom.orchestrator.context import RunContext

_START = "__problem__"
"""Reserved: the problem every input-less node starts from."""


class GraphNode(BaseModel):
    """One node of a strategy graph."""

    model_config = ConfigDict(extra="forbid")

    strategy: StrategyField
    """The strategy this node runs (a spec string, a dict with 'kind', or an instance)."""
    inputs: list[str] = Field(default_factory=list)
    """Upstream nodes whose candidates this node receives (empty: starts from the problem)."""
    map: bool = False
    """Run one copy of the strategy per input candidate, in parallel."""
    budget: Budget | None = None
    """Limits for this node alone (the run's limits still apply)."""


def to_networkx(nodes: dict[str, GraphNode]) -> nx.DiGraph:
    graph: nx.DiGraph = nx.DiGraph()
    for name, node in nodes.items():
        graph.add_node(name, node=node)
    for name, node in nodes.items():
        for source in node.inputs:
            graph.add_edge(source, name)
    return graph


def validate_graph(nodes: dict[str, GraphNode]) -> str:
    """Check a graph before anything runs; returns the sink's name.

    Raises:
        GraphError: naming the node at fault and how to fix it.
    """
    if not nodes:
        raise GraphError("the graph has no nodes; add at least one strategy node")
    if _START in nodes:
        raise GraphError(f"{_START!r} is a reserved node name; rename that node")
    for name, node in nodes.items():
        unknown = [i for i in node.inputs if i not in nodes]
        if unknown:
            raise GraphError(
                f"node {name!r} takes inputs from unknown node(s) {unknown}; "
                f"known nodes: {sorted(nodes)}"
            )
        if len(set(node.inputs)) != len(node.inputs):
            raise GraphError(f"node {name!r} lists the same input twice: {node.inputs}")
        if node.map and len(node.inputs) != 1:
            raise GraphError(
                f"map node {name!r} needs exactly one input to spread over, "
                f"it has {len(node.inputs)}"
            )
        consumes = type(node.strategy).consumes_inputs
        if node.inputs and not node.map and not consumes:
            raise GraphError(
                f"node {name!r} receives inputs but its strategy {node.strategy.kind!r} "
                "ignores them: set map: true to continue each input, or use a reducer "
                "(vote, select, concat) to join them"
            )
        if consumes and not node.inputs:
            raise GraphError(
                f"node {name!r} runs the reducer {node.strategy.kind!r} without inputs; "
                "list the nodes it should combine in inputs"
            )
    graph = to_networkx(nodes)
    if not nx.is_directed_acyclic_graph(graph):
        cycle = nx.find_cycle(graph)
        raise GraphError(
            f"the graph has a cycle: {' -> '.join(u for u, _ in cycle)} -> {cycle[0][0]}; "
            "strategy graphs must be acyclic (iterative searches run their rounds inside "
            "one node)"
        )
    sinks = [n for n in graph.nodes if graph.out_degree(n) == 0]
    if len(sinks) != 1:
        raise GraphError(
            f"the graph must have exactly one final node, found {len(sinks)}: {sorted(sinks)}; "
            "join the branches with a reducer node (e.g. kind: vote)"
        )
    return sinks[0]


async def execute_graph(
    ctx: RunContext, nodes: dict[str, GraphNode], sink: str, inputs: list[Candidate]
) -> list[Candidate]:
    """Run every node as soon as its inputs are ready; return the sink's candidates.

    `inputs` (from an enclosing graph) are given to nodes that have no inputs of their own
    only when those nodes consume inputs; otherwise such nodes start from the problem.
    """
    loop = asyncio.get_running_loop()
    results: dict[str, asyncio.Future[list[Candidate]]] = {n: loop.create_future() for n in nodes}
    order = list(nx.topological_sort(to_networkx(nodes)))

    async def run_node(name: str) -> None:
        node = nodes[name]
        received: list[Candidate] = []
        for source in node.inputs:
            received.extend(await results[source])
        trace_node = ctx.trace.add(
            "node",
            label=f"{name}: {node.strategy.label()}",
            parents=[
                (c.node_id, "join" if len(node.inputs) > 1 else "continue")
                for c in received
                if c.node_id
            ],
            node=name,
        )
        scope = ctx.fork(node.budget, root_node=trace_node)
        try:
            if node.map:
                copies = [scope.fork(root_node=trace_node) for _ in received]
                outputs = await asyncio.gather(
                    *(_run(node, copy, [c]) for copy, c in zip(copies, received, strict=True))
                )
                produced = [c for out in outputs for c in out]
            else:
                produced = await _run(node, scope, received or (inputs if not node.inputs else []))
        except asyncio.CancelledError:
            results[name].cancel()
            raise
        except BaseException as exc:
            results[name].set_exception(exc)
            results[name].exception()  # consumers may be gone; the task reports it
            raise
        ctx.trace.update(trace_node, candidates=len(produced), truncated=scope.truncated)
        results[name].set_result(produced)

    tasks = [asyncio.create_task(run_node(name), name=f"node:{name}") for name in order]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await ctx.cancel()
        raise
    return results[sink].result()


async def _run(node: GraphNode, ctx: RunContext, inputs: list[Candidate]) -> list[Candidate]:
    try:
        return await node.strategy.run(ctx, inputs)
    except BudgetExhausted:
        return []


def describe(nodes: dict[str, GraphNode]) -> dict[str, Any]:
    """A plain summary (for display): node -> kind, inputs, map."""
    return {
        name: {"kind": n.strategy.kind, "inputs": n.inputs, "map": n.map}
        for name, n in nodes.items()
    }
