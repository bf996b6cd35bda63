"""shortest-of-n: N samples; the shortest complete answer wins (brevity as the selector)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from threadloom.strategies.base import Strategy
from threadloom.types import Candidate

if TYPE_CHECKING:
    from threadloom.orchestrator.context import RunContext


class ShortestOfN(Strategy):
    """Sample `n` answers concurrently and return them shortest first.

    Samples cut off by the token limit go last: a truncated answer is short for the wrong
    reason. The `kind` must equal the entry-point name the package registers.
    """

    kind: Literal["shortest-of-n"] = "shortest-of-n"
    n: int = Field(4, ge=1, le=256)
    """How many samples to draw."""
    summary: ClassVar[str] = "N samples, the shortest complete answer first"

    async def run(self, ctx: RunContext, inputs: list[Candidate]) -> list[Candidate]:
        candidates = await ctx.sample(
            self.n,
            prefix=self.continuation(inputs),
            label="shortest-of-n",
            **self.sampling_overrides(),
        )
        await ctx.score_all(candidates)
        return sorted(candidates, key=lambda c: (c.finish_reason == "length", len(c.text)))
