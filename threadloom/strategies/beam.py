"""beam-search and dvts: step-wise search that keeps the best partial solutions by PRM score."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, model_validator

from threadloom.strategies.stepwise import Partial, StepSearch
from threadloom.types import Candidate

if TYPE_CHECKING:
    from threadloom.orchestrator.context import RunContext


async def beam_search(
    search: StepSearch, ctx: RunContext, root: Partial, *, width: int, expansions: int,
    tag: str = "beam",
) -> list[Partial]:
    """Grow `width` beams from `root`, `expansions` next steps per beam per round.

    Each round every live beam is extended `expansions` times; of all children the `width`
    best by aggregated PRM score survive. A complete child leaves the search and takes one of
    the `width` places for good, so the search ends after at most `width` solutions, when no
    beam is left, at `max_steps` rounds, or when a budget runs out. The first round expands the
    root `width * expansions` times so the beams start different.
    """
    live = [root]
    finished: list[Partial] = []
    for round_index in range(search.max_steps):
        if not live or len(finished) >= width or search.spent(ctx):
            break
        fan = width * expansions if round_index == 0 else expansions
        jobs = [
            search.step_and_score(ctx, beam, key=f"{tag}{b}",
                                  label=f"{tag} {b} step {round_index + 1}")
            for b, beam in enumerate(live)
            for _ in range(fan)
        ]
        children = [c for c in await asyncio.gather(*jobs) if c is not None]
        if not children:
            break
        children.sort(key=lambda p: -p.value(search.aggregation))
        places = width - len(finished)
        kept = children[:places]
        finished.extend(p for p in kept if p.complete)
        live = [p for p in kept if not p.complete]
    return finished + live


class BeamSearch(StepSearch):
    """Beam search over solution steps guided by a process reward model."""

    kind: Literal["beam-search"] = "beam-search"
    width: int = Field(4, ge=1, le=256)
    """Beams kept after each step (N)."""
    expansions: int = Field(4, ge=1, le=64)
    """Next steps sampled per beam per round (M)."""
    summary: ClassVar[str] = "N beams, M next steps each, keep the best N by PRM score"

    async def run(self, ctx: RunContext, inputs: list[Candidate]) -> list[Candidate]:
        scope = self.scope(ctx)
        root = Partial(text=self.continuation(inputs), node_id=scope.root_node)
        beams = await beam_search(self, scope, root, width=self.width, expansions=self.expansions)
        return await self.finish(scope, beams)


class DVTS(StepSearch):
    """Diverse verifier tree search: n / m independent subtrees, each a greedy beam.

    The budget of `n` beams is split into `n // m` subtrees that never compete with each other;
    in each, the best of `m` sampled next steps survives every round. Independent subtrees keep
    the answers diverse where one shared beam would collapse onto a single line of reasoning.
    """

    kind: Literal["dvts"] = "dvts"
    n: int = Field(16, ge=1, le=4096)
    """Total beams (the budget): n // m subtrees."""
    m: int = Field(4, ge=1, le=64)
    """Next steps sampled per subtree per round."""
    summary: ClassVar[str] = "n/m independent subtrees, best of m next steps in each"

    @model_validator(mode="after")
    def _subtrees(self) -> DVTS:
        if self.n < self.m:
            raise ValueError(f"n ({self.n}) must be at least m ({self.m}): n // m subtrees")
        return self

    async def run(self, ctx: RunContext, inputs: list[Candidate]) -> list[Candidate]:
        scope = self.scope(ctx)
        prefix = self.continuation(inputs)

        async def subtree(index: int) -> list[Partial]:
            root = Partial(text=prefix, node_id=scope.root_node)
            # width 1: the first round samples m first steps, every later round m next steps
            return await beam_search(self, scope, root, width=1, expansions=self.m,
                                     tag=f"tree{index}.")

        trees = await asyncio.gather(*(subtree(i) for i in range(self.n // self.m)))
        return await self.finish(scope, [p for tree in trees for p in tree])
