"""Checks a strategy graph before anything runs, with messages that name the node and the fix.

A join that races its inputs (``wait: first`` or ``wait: k``) cancels the branches that lose.
That is only safe when each input heads a branch of its own: the inputs must be siblings of one
fork (their nearest common dominator), and no node of one input's branch may feed anything but
that branch and the join, or cancelling a loser would starve another consumer.
"""

from __future__ import annotations

from collections.abc import Mapping

import networkx as nx

from threadloom.errors import GraphError
from threadloom.graph.nodes import GraphNode, Join

START = "__problem__"
"""Reserved: the problem every input-less node starts from."""

Branches = dict[str, dict[str, frozenset[str]]]
"""Racing join -> input -> the nodes of that input's branch (cancelled together if it loses)."""


def to_networkx(nodes: Mapping[str, GraphNode]) -> nx.DiGraph:
    """The plan as a networkx DiGraph (edges from each input to its consumer)."""
    graph: nx.DiGraph = nx.DiGraph()
    for name, node in nodes.items():
        graph.add_node(name, node=node)
    for name, node in nodes.items():
        for source in node.inputs:
            graph.add_edge(source, name)
    return graph


def validate_graph(nodes: Mapping[str, GraphNode]) -> str:
    """Check a graph before anything runs; returns the sink's name.

    Raises:
        GraphError: naming the node at fault and how to fix it.
    """
    if not nodes:
        raise GraphError("the graph has no nodes; add at least one strategy node")
    if START in nodes:
        raise GraphError(f"{START!r} is a reserved node name; rename that node")
    for name, node in nodes.items():
        _check_node(name, node, nodes)
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
    race_branches(nodes)
    return sinks[0]


def _check_node(name: str, node: GraphNode, nodes: Mapping[str, GraphNode]) -> None:
    unknown = [i for i in node.inputs if i not in nodes]
    if unknown:
        raise GraphError(
            f"node {name!r} takes inputs from unknown node(s) {unknown}; "
            f"known nodes: {sorted(nodes)}"
        )
    if len(set(node.inputs)) != len(node.inputs):
        raise GraphError(f"node {name!r} lists the same input twice: {node.inputs}")
    consumes = type(node.strategy).consumes_inputs
    if isinstance(node, Join):
        if node.map:
            raise GraphError(f"join {name!r} cannot map; give map: true to the node after it")
        if not consumes:
            raise GraphError(
                f"join {name!r} has the reducer {node.strategy.kind!r}, which does not combine "
                "candidates; use first, concat, vote or select"
            )
        if node.needed > len(node.inputs):
            raise GraphError(
                f"join {name!r} waits for {node.needed} inputs but has only "
                f"{len(node.inputs)}; lower wait or add inputs"
            )
        return
    if node.map and len(node.inputs) != 1:
        raise GraphError(
            f"map node {name!r} needs exactly one input to spread over, "
            f"it has {len(node.inputs)}"
        )
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


def race_branches(nodes: Mapping[str, GraphNode]) -> Branches:
    """For every join that races its inputs, the branch each input heads.

    Raises:
        GraphError: A racing join's inputs are not siblings of one fork (a branch is shared,
            or feeds a node outside the race).
    """
    racing = {n: j for n, j in nodes.items() if isinstance(j, Join) and j.races}
    if not racing:
        return {}
    graph = to_networkx(nodes)
    for name, node in nodes.items():
        if not node.inputs:
            graph.add_edge(START, name)
    dominators = nx.immediate_dominators(graph, START)
    branches: Branches = {}
    for name, join in racing.items():
        fork = _common_dominator(dominators, join.inputs)
        above = nx.ancestors(graph, fork) | {fork}
        owner: dict[str, str] = {}
        per_input: dict[str, frozenset[str]] = {}
        for source in join.inputs:
            branch = frozenset((nx.ancestors(graph, source) | {source}) - above)
            for member in sorted(branch):
                if member in owner:
                    raise GraphError(_not_siblings(name, join, fork, member, owner[member], source))
                owner[member] = source
            per_input[source] = branch
        for source, branch in per_input.items():
            for member in sorted(branch):
                outside = set(graph.successors(member)) - branch - {name}
                if outside:
                    raise GraphError(
                        f"join {name!r} races its inputs (wait: {join.wait}), but a first-join's "
                        f"inputs must be siblings of one fork: {member!r} in the branch of "
                        f"{source!r} also feeds {sorted(outside)}, which cancelling the loser "
                        "would starve; give the race branches of its own or use wait: all"
                    )
        branches[name] = per_input
    return branches


def _common_dominator(dominators: Mapping[str, str], inputs: list[str]) -> str:
    """The nearest node that dominates every input (the fork the inputs branch from)."""

    def chain(node: str) -> list[str]:
        path = [node]
        while path[-1] != START:
            path.append(dominators[path[-1]])
        return path

    common = set(chain(dominators[inputs[0]]))
    for source in inputs[1:]:
        common &= set(chain(dominators[source]))
    return next(n for n in chain(dominators[inputs[0]]) if n in common)


def _not_siblings(name: str, join: Join, fork: str, member: str, first: str, second: str) -> str:
    where = "the problem" if fork == START else repr(fork)
    return (
        f"join {name!r} races its inputs (wait: {join.wait}), but a first-join's inputs must be "
        f"siblings of one fork: {first!r} and {second!r} share {member!r} below their fork "
        f"({where}), so cancelling one would cancel the other; join separate branches, or "
        "use wait: all"
    )
