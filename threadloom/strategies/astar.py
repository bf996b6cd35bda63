"""a-star: best-first search over solution steps, the PRM score as the priority."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from threadloom.strategies.stepwise import Partial, StepSearch
from threadloom.types import Candidate

if TYPE_CHECKING:
    from threadloom.orchestrator.context import RunContext


class AStar(StepSearch):
    """A*-decoding: a frontier of partial solutions ordered by aggregated PRM score.

    The best partial is popped and extended with `k` sampled next steps, each scored by the
    PRM and pushed back. The search stops when `solutions` complete solutions have been popped
    (a complete one is popped only when nothing open scores higher, which is what saves tokens
    against sampling every path to the end), when `max_expansions` pops are spent, or when a
    budget runs out; then the popped solutions, else the best open partials, are returned.
    Generator tokens and PRM calls are counted apart (`usage.completion_tokens` and
    `usage.verifier_calls`).
    """

    kind: Literal["a-star"] = "a-star"
    k: int = Field(4, ge=1, le=64)
    """Next steps sampled when a partial solution is expanded."""
    solutions: int = Field(1, ge=1, le=256)
    """Complete solutions to pop before stopping."""
    max_expansions: int = Field(32, ge=1, le=10_000)
    """Pops of incomplete partials at most."""
    summary: ClassVar[str] = "best-first search on PRM scores, expand the best with k steps"

    async def run(self, ctx: RunContext, inputs: list[Candidate]) -> list[Candidate]:
        scope = self.scope(ctx)
        popped = await self.search(scope, Partial(text=self.continuation(inputs),
                                                  node_id=scope.root_node))
        return await self.finish(scope, popped)

    def priority(self, partial: Partial) -> tuple[float, int]:
        """Higher score first; between equal scores the deeper partial (closer to an end)."""
        return -partial.value(self.aggregation), -len(partial.steps)

    async def search(self, ctx: RunContext, root: Partial) -> list[Partial]:
        """Run the search; returns the popped complete solutions, else the open frontier."""
        counter = itertools.count()
        frontier: list[tuple[tuple[float, int], int, Partial]] = []
        heapq.heappush(frontier, (self.priority(root), next(counter), root))
        solved: list[Partial] = []
        expansions = 0
        while frontier and len(solved) < self.solutions:
            _, _, best = heapq.heappop(frontier)
            if best.complete:
                solved.append(best)
                ctx.trace.add("select", label=f"a-star solution {len(solved)}",
                              parents=[(best.node_id, "pop")] if best.node_id else [],
                              value=best.value(self.aggregation))
                continue
            if expansions >= self.max_expansions or self.spent(ctx):
                heapq.heappush(frontier, (self.priority(best), next(counter), best))
                break
            expansions += 1
            children = await asyncio.gather(*(
                self.step_and_score(ctx, best, key=f"astar{expansions}",
                                    label=f"a-star pop {expansions}")
                for _ in range(self.k)
            ))
            for child in children:
                if child is not None:
                    heapq.heappush(frontier, (self.priority(child), next(counter), child))
        if solved:
            return solved
        return [entry[2] for entry in sorted(frontier)]
