"""single: one sample, the baseline every other strategy is measured against."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from threadloom.strategies.base import Strategy
from threadloom.types import Candidate

if TYPE_CHECKING:
    from threadloom.orchestrator.context import RunContext


class Single(Strategy):
    """Draw one sample and return it (scored, when a verifier is configured)."""

    kind: Literal["single"] = "single"
    summary: ClassVar[str] = "one sample (the baseline)"

    async def run(self, ctx: RunContext, inputs: list[Candidate]) -> list[Candidate]:
        candidates = await ctx.sample(
            1, prefix=self.continuation(inputs), label="single", **self.sampling_overrides()
        )
        await ctx.score_all(candidates)
        return candidates
