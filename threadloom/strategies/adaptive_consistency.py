"""adaptive-consistency: self-consistency that stops sampling once the vote has settled."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from threadloom.errors import BudgetExhausted
from threadloom.strategies.base import Strategy
from threadloom.strategies.tally import rank_by_vote
from threadloom.types import Candidate, Completion
from threadloom.verifiers.confidence import DEFAULT_GROUP, confidence, token_values
from threadloom.verifiers.stopping import StopRule, settled
from threadloom.verifiers.voting import answer_key

if TYPE_CHECKING:
    from threadloom.orchestrator.context import RunContext

logger = logging.getLogger(__name__)

StopReason = Literal["settled", "max_n", "budget"]


class AdaptiveConsistency(Strategy):
    """Sample in waves of `wave` and vote; stop as soon as the vote has settled.

    After every finished sample the stopping rule looks at the answers so far; when it fires
    (or the leader can no longer be overtaken within `max_n`), the samples still decoding are
    aborted on the worker and the vote is taken. A 'stop' node in the trace records where the
    run stopped and why.
    """

    kind: Literal["adaptive-consistency"] = "adaptive-consistency"
    max_n: int = Field(16, ge=1, le=4096)
    """Most samples drawn."""
    wave: int = Field(4, ge=1, le=4096)
    """Samples decoded together before more are started."""
    rule: StopRule = "beta"
    """beta (posterior of the top two answers), window (the last `window` agree), votes (an
    answer has `votes` votes) or margin."""
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    """The beta rule stops once the leader is ahead with this posterior probability."""
    window: int | None = Field(None, ge=1)
    """Answers that must agree for the window rule (None: `wave`)."""
    votes: int = Field(2, ge=1)
    """Votes an answer needs for the votes rule. With a weak model whose samples rarely agree,
    2 (stop at the first repeated answer) spent two thirds of self-consistency's tokens for the
    same accuracy on the bundled arithmetic set; see docs/adaptive-compute.md."""
    summary: ClassVar[str] = "self-consistency in waves, stopping when the vote has settled"

    async def run(self, ctx: RunContext, inputs: list[Candidate]) -> list[Candidate]:
        scope = ctx.fork()
        prefix = self.continuation(inputs)
        request = scope.request(prefix=prefix, logprobs=0, **self.sampling_overrides())
        fmt = ctx.problem.answer_format
        finished: list[Candidate] = []
        keys: list[str | None] = []
        launched = aborted = 0
        reason: StopReason = "max_n"

        async def one(i: int) -> tuple[Completion, str]:
            fresh = request.model_copy(update={"request_id": f"{request.request_id}-{i}"})
            return await scope.generate(fresh, label=f"adaptive {i}")

        pending: set[asyncio.Task[tuple[Completion, str]]] = set()
        try:
            while launched < self.max_n and reason == "max_n":
                size = min(self.wave, self.max_n - launched)
                pending = {asyncio.create_task(one(launched + j)) for j in range(size)}
                launched += size
                while pending:
                    done, pending = await asyncio.wait(
                        pending, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in done:
                        if isinstance(task.exception(), BudgetExhausted):
                            reason = "budget"
                            continue
                        completion, node = task.result()  # other errors propagate
                        if completion.finish_reason == "abort":
                            continue
                        candidate = scope.candidate(completion, node, prefix=prefix)
                        candidate.metadata["confidence"] = confidence(
                            token_values(completion.logprobs), "lowest-group", DEFAULT_GROUP
                        )
                        finished.append(candidate)
                        keys.append(answer_key(candidate.answer, fmt))
                    if reason == "max_n" and len(finished) < self.max_n and settled(
                        keys,
                        rule=self.rule,
                        confidence=self.confidence,
                        window=self.window or self.wave,
                        votes=self.votes,
                        remaining=self.max_n - len(finished),
                    ):
                        reason = "settled"
                        break
                if reason == "budget":
                    break
        finally:
            if pending:
                await scope.cancel()
                rest = await asyncio.gather(*pending, return_exceptions=True)
                # one that reached its own end before the abort landed is not counted
                aborted = sum(
                    1 for r in rest if isinstance(r, tuple) and r[0].finish_reason == "abort"
                )
        stop = {
            "stopped_after": len(finished),
            "launched": launched,
            "aborted": aborted,
            "stop_reason": reason,
            "max_n": self.max_n,
        }
        logger.debug("adaptive-consistency stopped: %s", stop)
        ctx.trace.add(
            "stop",
            label=f"{reason} after {len(finished)} of {self.max_n} samples",
            parents=[(c.node_id, "join") for c in finished[-1:] if c.node_id],
            **stop,
        )
        for candidate in finished:
            candidate.metadata.update(stop)
        return rank_by_vote(ctx, finished)
