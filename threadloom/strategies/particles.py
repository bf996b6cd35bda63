"""particle-filtering: sequential Monte Carlo over solution steps (Puri et al., 2025)."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from threadloom.strategies.stepwise import Partial, StepSearch
from threadloom.types import Candidate
from threadloom.verifiers.base import StepAggregation

if TYPE_CHECKING:
    from threadloom.orchestrator.context import RunContext


def softmax_weights(rewards: Sequence[float], temperature: float) -> list[float]:
    """Normalised exp(reward / temperature), computed stably."""
    if not rewards:
        return []
    scaled = [r / temperature for r in rewards]
    top = max(scaled)
    exps = [math.exp(s - top) for s in scaled]
    total = sum(exps)
    return [e / total for e in exps]


def resample(weights: Sequence[float], count: int, rng: random.Random) -> list[int]:
    """`count` indices drawn with replacement in proportion to `weights` (multinomial)."""
    return rng.choices(range(len(weights)), weights=weights, k=count)


class ParticleFiltering(StepSearch):
    """Particle filtering over solution steps guided by a process reward model.

    `n` particles start from the prompt. Each round every unfinished particle is extended by one
    step and scored; then all particles are weighted by the softmax of their rewards at
    `resample_temperature` and `n` are drawn with replacement (the context's seeded generator,
    so runs are reproducible). A finished particle keeps its weight and may be drawn again, but
    it is never extended: its copies stay finished. The rounds end when every particle is
    finished, after `max_steps`, or when a budget runs out; the answer is the best particle by
    aggregated score, or the weighted majority (`select`).
    """

    kind: Literal["particle-filtering"] = "particle-filtering"
    n: int = Field(8, ge=1, le=4096)
    """Particles."""
    resample_temperature: float = Field(1.0, gt=0.0, le=100.0)
    """Softmax temperature of the resampling weights; lower follows the PRM more greedily."""
    reward: StepAggregation = "last"
    """Which step scores weight a particle while resampling (the latest step's by default)."""
    summary: ClassVar[str] = "N particles, one step a round, resample by softmax of PRM rewards"

    def weight_of(self, particle: Partial) -> float:
        return particle.value(self.reward)

    async def run(self, ctx: RunContext, inputs: list[Candidate]) -> list[Candidate]:
        scope = self.scope(ctx)
        root = Partial(text=self.continuation(inputs), node_id=scope.root_node)
        particles = [root] * self.n
        seen: list[Partial] = []
        for round_index in range(self.max_steps):
            if all(p.complete for p in particles) or self.spent(scope):
                break
            particles = await self.advance(scope, particles, round_index)
            seen.extend(particles)
            if all(p.complete for p in particles) or round_index == self.max_steps - 1:
                break
            particles = self.resampled(scope, particles, round_index)
        population = particles if any(p.steps for p in particles) else seen
        return await self.finish(scope, population)

    async def advance(self, ctx: RunContext, particles: list[Partial],
                      round_index: int) -> list[Partial]:
        """Extend every unfinished particle by one step; finished ones stay as they are."""

        async def step(i: int, particle: Partial) -> Partial:
            if particle.complete:
                return particle
            child = await self.step_and_score(ctx, particle, key=f"particle{i}",
                                              label=f"particle {i} step {round_index + 1}")
            return particle if child is None else child

        return list(await asyncio.gather(*(step(i, p) for i, p in enumerate(particles))))

    def resampled(self, ctx: RunContext, particles: list[Partial],
                  round_index: int) -> list[Partial]:
        weights = softmax_weights([self.weight_of(p) for p in particles],
                                  self.resample_temperature)
        drawn = resample(weights, len(particles), ctx.rng)
        ctx.trace.add("resample", label=f"round {round_index + 1}: {len(set(drawn))} distinct",
                      parents=[(node, "resample") for i in sorted(set(drawn))
                               if (node := particles[i].node_id)],
                      weights=[round(w, 4) for w in weights], drawn=drawn)
        # copies share text but need their own score lists, which later steps append to
        return [replace(particles[i], steps=list(particles[i].steps),
                        scores=list(particles[i].scores)) for i in drawn]
