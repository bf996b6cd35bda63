"""Reducer strategies: thin adapters that let a plan name a reducer as a strategy kind.

Each scores its inputs if it needs a verifier (I/O through the run context), calls the pure
reducer of `threadloom.graph.reducers`, and records the outcome in the thought graph.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from threadloom.graph import reducers
from threadloom.strategies.base import Strategy
from threadloom.types import Candidate

if TYPE_CHECKING:
    from threadloom.orchestrator.context import RunContext


class Concat(Strategy):
    """Pass every input candidate on, in input order."""

    kind: Literal["concat"] = "concat"
    summary: ClassVar[str] = "join: all inputs, unchanged"
    consumes_inputs: ClassVar[bool] = True

    async def run(self, ctx: RunContext, inputs: list[Candidate]) -> list[Candidate]:
        return reducers.concat(inputs)


class Select(Strategy):
    """Score the inputs with a verifier and return them best first."""

    kind: Literal["select"] = "select"
    verifier: str | None = None
    """Verifier to rank with (None: the run's default; without one, log-probability)."""
    summary: ClassVar[str] = "join: rank inputs by verifier score"
    consumes_inputs: ClassVar[bool] = True

    async def run(self, ctx: RunContext, inputs: list[Candidate]) -> list[Candidate]:
        judge = ctx.verifier(self.verifier)
        if judge is not None:
            await ctx.score_all([c for c in inputs if judge.name not in c.scores], self.verifier)
        ranked = reducers.select(inputs, judge.name if judge else None)
        if ranked and ranked[0].node_id:
            ctx.trace.add(
                "select", label=f"best of {len(ranked)}", parents=[(ranked[0].node_id, "select")]
            )
        return ranked


class Vote(Strategy):
    """Majority vote over the inputs' answers, optionally weighted by a verifier's scores."""

    kind: Literal["vote"] = "vote"
    verifier: str | None = None
    """Verifier whose scores weight the votes (None: one vote per candidate)."""
    summary: ClassVar[str] = "join: majority (or weighted) vote over inputs"
    consumes_inputs: ClassVar[bool] = True

    async def run(self, ctx: RunContext, inputs: list[Candidate]) -> list[Candidate]:
        judge = ctx.verifier(self.verifier) if self.verifier else None
        if judge is not None:
            await ctx.score_all([c for c in inputs if judge.name not in c.scores], self.verifier)
        outcome = reducers.vote(
            inputs, ctx.problem.answer_format, weight_by=judge.name if judge else None
        )
        if outcome.groups:
            winner = outcome.groups[0]
            ctx.trace.add(
                "vote",
                label=f"{winner.members[0].answer} ({winner.weight:.3g})",
                parents=[(m.node_id, "join") for m in winner.members if m.node_id],
            )
        return outcome.ranked
