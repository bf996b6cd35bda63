"""best-of-n: N samples in parallel; the verifier picks the best."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from threadloom.strategies.base import Strategy
from threadloom.types import Candidate
from threadloom.verifiers.voting import rank_by_score

if TYPE_CHECKING:
    from threadloom.orchestrator.context import RunContext


class BestOfN(Strategy):
    """Sample `n` answers concurrently, score each, return them best first.

    Ties (and runs without a verifier) are broken by the mean token log-probability.
    """

    kind: Literal["best-of-n"] = "best-of-n"
    n: int = Field(8, ge=1, le=4096)
    """How many samples to draw."""
    verifier: str | None = None
    """Verifier that scores the samples (None: the run's default)."""
    summary: ClassVar[str] = "N samples, the verifier picks the best"

    async def run(self, ctx: RunContext, inputs: list[Candidate]) -> list[Candidate]:
        candidates = await ctx.sample(
            self.n,
            prefix=self.continuation(inputs),
            label="best-of-n",
            logprobs=0,
            **self.sampling_overrides(),
        )
        await ctx.score_all(candidates, self.verifier)
        judge = ctx.verifier(self.verifier)
        ranked = rank_by_score(candidates, judge.name if judge else None)
        if ranked:
            ctx.trace.add(
                "select",
                label=f"best of {len(ranked)}",
                parents=[(c.node_id, "select") for c in ranked[:1] if c.node_id],
                considered=len(ranked),
            )
        return ranked
