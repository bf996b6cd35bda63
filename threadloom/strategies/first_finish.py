"""first-finish: launch n samples, keep the first to finish, abort the rest at once."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, model_validator

from threadloom.errors import BudgetExhausted
from threadloom.strategies.base import Strategy
from threadloom.types import Candidate, Completion
from threadloom.verifiers.voting import logprob_of, vote

if TYPE_CHECKING:
    from threadloom.orchestrator.context import RunContext


class FirstFinish(Strategy):
    """First-Finish search: shorter finished chains tend to be the better ones.

    All `n` samples decode together; as soon as `k` have finished, the others are aborted on
    the worker. With k = 1 the first finisher wins; with k > 1 the finishers vote. The tokens
    the losers decoded after the deciding finisher are reported (they should be near zero).
    """

    kind: Literal["first-finish"] = "first-finish"
    n: int = Field(8, ge=1, le=4096)
    """Samples launched together."""
    k: int = Field(1, ge=1)
    """Finishers to wait for; with k > 1 their answers vote."""
    summary: ClassVar[str] = "n samples, first k to finish win, the rest are aborted"

    @model_validator(mode="after")
    def _k_at_most_n(self) -> FirstFinish:
        if self.k > self.n:
            raise ValueError(f"k={self.k} cannot exceed n={self.n}")
        return self

    async def run(self, ctx: RunContext, inputs: list[Candidate]) -> list[Candidate]:
        scope = ctx.fork()
        prefix = self.continuation(inputs)
        request = scope.request(prefix=prefix, logprobs=0, **self.sampling_overrides())
        streamed = [0] * self.n

        async def one(i: int) -> tuple[Completion, str]:
            fresh = request.model_copy(update={"request_id": f"{request.request_id}-{i}"})
            final: Completion | None = None
            final_node = ""
            async for delta, node in scope.stream(fresh, label=f"first-finish {i}"):
                if delta.text:
                    streamed[i] += 1
                if delta.completion is not None:
                    final, final_node = delta.completion, node
            assert final is not None
            return final, final_node

        tasks = [asyncio.create_task(one(i)) for i in range(self.n)]
        finishers: list[tuple[Completion, str]] = []
        pending = set(tasks)
        tokens_at_decision = 0
        try:
            while pending and len(finishers) < self.k:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is None and task.result()[0].finish_reason != "abort":
                        finishers.append(task.result())
                    elif isinstance(task.exception(), BudgetExhausted):
                        continue
                    elif task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
            tokens_at_decision = sum(streamed)
        finally:
            if pending:
                await scope.cancel()
            rest = await asyncio.gather(*pending, return_exceptions=True)
        losers = [r for r in rest if isinstance(r, tuple)]
        tokens_total = sum(c.usage.completion_tokens for c, _ in finishers + losers)
        # tokens counted from streamed deltas when the k-th finisher arrived, versus the end
        after = max(0, tokens_total - tokens_at_decision)
        candidates = [scope.candidate(c, node, prefix=prefix) for c, node in finishers[: self.k]]
        for order, candidate in enumerate(candidates):
            candidate.metadata.update(
                finish_order=order, tokens_after_decision=after, aborted=len(losers)
            )
        if self.k > 1:
            groups = vote(candidates, ctx.problem.answer_format)
            ranked = [m for g in groups for m in sorted(g.members, key=logprob_of, reverse=True)]
            candidates = ranked + [c for c in candidates if all(c is not r for r in ranked)]
        if candidates and candidates[0].node_id:
            ctx.trace.add(
                "select",
                label=f"first to finish of {self.n}",
                parents=[(candidates[0].node_id, "select")],
                aborted=len(losers),
                tokens_after_decision=after,
            )
        return candidates
