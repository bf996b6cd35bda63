"""Reducers: strategies that combine the candidates of upstream graph nodes."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from threadloom.strategies.base import Strategy
from threadloom.types import Candidate
from threadloom.verifiers.voting import VoteGroup, logprob_of, rank_by_score, vote

if TYPE_CHECKING:
    from threadloom.orchestrator.context import RunContext


class Concat(Strategy):
    """Pass every input candidate on, in input order."""

    kind: Literal["concat"] = "concat"
    summary: ClassVar[str] = "join: all inputs, unchanged"
    consumes_inputs: ClassVar[bool] = True

    async def run(self, ctx: RunContext, inputs: list[Candidate]) -> list[Candidate]:
        return list(inputs)


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
        ranked = rank_by_score(inputs, judge.name if judge else None)
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
            name = judge.name

            def weight(c: Candidate) -> float:
                return c.score_value(name) or 0.0
        else:
            weight = None  # type: ignore[assignment]

        def tie_break(group: VoteGroup) -> float:
            return max(logprob_of(m) for m in group.members)

        groups = vote(inputs, ctx.problem.answer_format, weight=weight, tie_break=tie_break)
        ordered = [m for g in groups for m in sorted(g.members, key=logprob_of, reverse=True)]
        seen = {id(c) for c in ordered}
        ordered.extend(c for c in inputs if id(c) not in seen)
        if groups:
            ctx.trace.add(
                "vote",
                label=f"{groups[0].members[0].answer} ({groups[0].weight:.3g})",
                parents=[(m.node_id, "join") for m in groups[0].members if m.node_id],
            )
        return ordered
