"""weighted-majority: N samples, a vote over answers weighted by their PRM score."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from threadloom.strategies.stepwise import Partial, StepSearch
from threadloom.types import Candidate
from threadloom.verifiers.prm import split_steps

if TYPE_CHECKING:
    from threadloom.orchestrator.context import RunContext


class WeightedMajority(StepSearch):
    """Sample `n` whole solutions, score every step with the PRM, and vote over the answers
    with each solution's aggregated score as its weight."""

    kind: Literal["weighted-majority"] = "weighted-majority"
    n: int = Field(8, ge=1, le=4096)
    """Solutions sampled."""
    select: Literal["best", "weighted-vote"] = "weighted-vote"
    summary: ClassVar[str] = "N samples, vote over answers weighted by PRM score"

    async def run(self, ctx: RunContext, inputs: list[Candidate]) -> list[Candidate]:
        scope = self.scope(ctx)
        prefix = self.continuation(inputs)
        samples = await scope.sample(self.n, prefix=prefix, label="weighted-majority",
                                     logprobs=0, **self.sampling_overrides())

        async def judged(sample: Candidate) -> Partial:
            body = sample.text[len(prefix):]
            partial = Partial(text=sample.text, steps=split_steps(body, self.delimiter),
                              node_id=sample.node_id, complete=sample.finish_reason == "stop",
                              finish_reason=sample.finish_reason,
                              tokens=sample.completion_tokens or 0)
            return await self.score(scope, partial)

        partials = await asyncio.gather(*(judged(s) for s in samples))
        return await self.finish(scope, list(partials))
