"""self-consistency: N samples, majority vote over their extracted answers."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from threadloom.strategies.base import Strategy
from threadloom.types import Candidate
from threadloom.verifiers.voting import VoteGroup, logprob_of, vote

if TYPE_CHECKING:
    from threadloom.orchestrator.context import RunContext


class SelfConsistency(Strategy):
    """Sample `n` answers and return the most common one (Wang et al., 2022).

    Ties between answers are broken by the summed verifier score of each group when a verifier
    is configured, otherwise by the best mean log-probability in each group.
    """

    kind: Literal["self-consistency"] = "self-consistency"
    n: int = Field(8, ge=1, le=4096)
    """How many samples vote."""
    verifier: str | None = None
    """Verifier used only to break ties (None: the run's default, if any)."""
    summary: ClassVar[str] = "N samples, majority vote over answers"

    async def run(self, ctx: RunContext, inputs: list[Candidate]) -> list[Candidate]:
        candidates = await ctx.sample(
            self.n,
            prefix=self.continuation(inputs),
            label="self-consistency",
            logprobs=0,
            **self.sampling_overrides(),
        )
        judge = ctx.verifier(self.verifier)
        if judge is not None:
            await ctx.score_all(candidates, self.verifier)

        def tie_break(group: VoteGroup) -> float:
            if judge is not None:
                return sum(m.score_value(judge.name) or 0.0 for m in group.members)
            return max(logprob_of(m) for m in group.members)

        groups = vote(candidates, ctx.problem.answer_format, tie_break=tie_break)
        ordered: list[Candidate] = []
        for group in groups:
            ordered.extend(sorted(group.members, key=logprob_of, reverse=True))
        voted = {id(c) for c in ordered}
        ordered.extend(c for c in candidates if id(c) not in voted)
        if groups:
            winner = groups[0]
            ctx.trace.add(
                "vote",
                label=f"{winner.key} with {len(winner.members)}/{len(candidates)} votes",
                parents=[(m.node_id, "join") for m in winner.members if m.node_id],
                answer=winner.members[0].answer,
                votes={g.members[0].answer: len(g.members) for g in groups},
            )
        return ordered
