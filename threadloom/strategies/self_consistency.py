"""self-consistency: N samples, majority vote over their extracted answers."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from threadloom.strategies.base import Strategy
from threadloom.strategies.tally import rank_by_vote
from threadloom.types import Candidate
from threadloom.verifiers.voting import VoteGroup

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
        if judge is None:
            return rank_by_vote(ctx, candidates)
        await ctx.score_all(candidates, self.verifier)

        def summed_score(group: VoteGroup) -> float:
            return sum(m.score_value(judge.name) or 0.0 for m in group.members)

        return rank_by_vote(ctx, candidates, tie_break=summed_score)
