"""graph: a strategy graph as a strategy, so graphs nest inside graphs and strategies."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, PrivateAttr, model_validator

from threadloom.graph.executor import execute_graph
from threadloom.graph.nodes import PlanNode
from threadloom.graph.validation import Branches, race_branches, validate_graph
from threadloom.strategies.base import Strategy
from threadloom.types import Candidate

if TYPE_CHECKING:
    from threadloom.orchestrator.context import RunContext


class Graph(Strategy):
    """A DAG of strategy nodes and joins, validated when built; its final node's candidates
    are its own."""

    kind: Literal["graph"] = "graph"
    nodes: dict[str, PlanNode] = Field(default_factory=dict)
    """Node name -> node (a strategy node, or a join written {join: [...], reducer: ...})."""
    summary: ClassVar[str] = "a DAG of strategies (fork, map, join)"
    _sink: str = PrivateAttr("")
    _branches: Branches = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _validate(self) -> Graph:
        self._sink = validate_graph(self.nodes)
        self._branches = race_branches(self.nodes)
        return self

    @property
    def sink(self) -> str:
        """The node whose candidates are the graph's result."""
        return self._sink

    async def run(self, ctx: RunContext, inputs: list[Candidate]) -> list[Candidate]:
        return await execute_graph(ctx, self.nodes, self._sink, inputs, self._branches)

    def label(self) -> str:
        return f"graph({', '.join(f'{n}={g.label()}' for n, g in self.nodes.items())})"
