"""Runs a validated strategy graph: every node as soon as its inputs are ready, concurrently.

Each node runs in its own cancellation scope (a `RunContext.fork`). A join that races its
inputs takes the first (or first k) to finish with candidates, then cancels the scopes of the
losing branches, which aborts their generations on the worker; the losers' trace nodes are
marked cancelled and their generations end as aborted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

import networkx as nx

from threadloom.errors import BudgetExhausted
from threadloom.graph.nodes import GraphNode, Join
from threadloom.graph.validation import Branches, race_branches, to_networkx
from threadloom.types import Candidate

if TYPE_CHECKING:
    from threadloom.orchestrator.context import RunContext

logger = logging.getLogger(__name__)


async def execute_graph(
    ctx: RunContext,
    nodes: Mapping[str, GraphNode],
    sink: str,
    inputs: list[Candidate],
    branches: Branches | None = None,
) -> list[Candidate]:
    """Run every node as soon as its inputs are ready; return the sink's candidates.

    Args:
        ctx: The scope the graph runs in; each node runs in a child scope.
        nodes: The validated nodes.
        sink: The node whose candidates are the result.
        inputs: Candidates from an enclosing graph, given to input-less nodes that consume
            inputs (others start from the problem).
        branches: The branches of racing joins (see `race_branches`); computed if omitted.
    """
    run = _GraphRun(ctx, nodes, inputs, race_branches(nodes) if branches is None else branches)
    return await run.execute(sink)


class _GraphRun:
    """The state of one execution: each node's result, scope and task, and the dropped ones."""

    def __init__(
        self,
        ctx: RunContext,
        nodes: Mapping[str, GraphNode],
        inputs: list[Candidate],
        branches: Branches,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.ctx = ctx
        self.nodes = nodes
        self.inputs = inputs
        self.branches = branches
        self.results: dict[str, asyncio.Future[list[Candidate]]] = {
            n: loop.create_future() for n in nodes
        }
        self.scopes: dict[str, RunContext] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.dropped: set[str] = set()
        """Nodes of branches that lost a race: cancelled on purpose, their outcome unused."""

    async def execute(self, sink: str) -> list[Candidate]:
        order = list(nx.topological_sort(to_networkx(self.nodes)))
        self.tasks = {
            name: asyncio.create_task(self._guarded(name), name=f"node:{name}") for name in order
        }
        try:
            await asyncio.gather(*self.tasks.values())
        except BaseException:
            for task in self.tasks.values():
                task.cancel()
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            await self.ctx.cancel()
            raise
        return self.results[sink].result()

    async def _guarded(self, name: str) -> None:
        try:
            await self._run_node(name)
        except BaseException as exc:
            if name not in self.dropped:
                raise
            logger.debug("node %s ended after losing a race: %r", name, exc)
            if not self.results[name].done():
                self.results[name].cancel()

    async def _run_node(self, name: str) -> None:
        node = self.nodes[name]
        losers: list[str] = []
        if isinstance(node, Join) and node.races:
            received, losers = await self._race(name, node)
        else:
            received = []
            for source in node.inputs:
                received.extend(await self.results[source])
        edge = "join" if len(node.inputs) > 1 else "continue"
        details: dict[str, object] = {"node": name}
        if isinstance(node, Join):
            details["wait"] = node.wait
        if losers:
            details["cancelled_inputs"] = losers
        trace_node = self.ctx.trace.add(
            "node",
            label=f"{name}: {node.label()}",
            parents=[(c.node_id, edge) for c in received if c.node_id],
            **details,
        )
        scope = self.ctx.fork(node.budget, root_node=trace_node)
        self.scopes[name] = scope
        result = self.results[name]
        try:
            if node.map:
                copies = [scope.fork(root_node=trace_node) for _ in received]
                outputs = await asyncio.gather(
                    *(_run(node, copy, [c]) for copy, c in zip(copies, received, strict=True))
                )
                produced = [c for out in outputs for c in out]
            else:
                given = received or (self.inputs if not node.inputs else [])
                produced = await _run(node, scope, given)
        except asyncio.CancelledError:
            result.cancel()
            raise
        except BaseException as exc:
            result.set_exception(exc)
            result.exception()  # consumers may be gone; the task reports it
            raise
        update: dict[str, object] = {"candidates": len(produced), "truncated": scope.truncated}
        if name in self.dropped:
            update["cancelled"] = True
        self.ctx.trace.update(trace_node, **update)
        result.set_result(produced)

    async def _race(self, name: str, join: Join) -> tuple[list[Candidate], list[str]]:
        """Wait for the first `join.needed` inputs to finish with candidates; cancel the rest.

        Returns the winners' candidates (in the order they finished) and the losing inputs.
        """
        position = {source: i for i, source in enumerate(join.inputs)}
        pending = {self.results[source]: source for source in join.inputs}
        received: list[Candidate] = []
        winners = 0
        while pending and winners < join.needed:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: position[pending[f]]):
                del pending[future]
                candidates = future.result()  # an input that failed fails the join
                if candidates and winners < join.needed:
                    received.extend(candidates)
                    winners += 1
        losers = sorted(pending.values(), key=position.__getitem__)
        for loser in losers:
            await self._drop(self.branches[name][loser])
        if losers:
            logger.debug("join %s kept %d input(s) and cancelled %s", name, winners, losers)
        return received, losers

    async def _drop(self, members: frozenset[str]) -> None:
        """Cancel a losing branch: running nodes through their scopes (which aborts their
        generations on the worker), nodes still waiting for inputs through their tasks."""
        self.dropped |= members
        for member in sorted(members):
            scope = self.scopes.get(member)
            if scope is not None:
                await scope.cancel()
            elif not self.tasks[member].done():
                self.tasks[member].cancel()


async def _run(node: GraphNode, ctx: RunContext, inputs: list[Candidate]) -> list[Candidate]:
    try:
        return await node.strategy.run(ctx, inputs)
    except BudgetExhausted:
        return []
