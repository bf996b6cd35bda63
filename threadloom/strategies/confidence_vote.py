"""confidence-vote: a vote weighted or filtered by each sample's token-level confidence."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, model_validator

from threadloom.errors import BudgetExhausted
from threadloom.orchestrator.context import gather_or_cancel
from threadloom.strategies.base import Strategy
from threadloom.strategies.tally import rank_by_vote
from threadloom.types import Candidate, Completion, GenerationRequest
from threadloom.verifiers.confidence import (
    DEFAULT_GROUP,
    ConfidenceMeasure,
    confidence,
    confidence_weight,
    keep_most_confident,
    threshold_from_warmup,
    token_values,
)

if TYPE_CHECKING:
    from threadloom.orchestrator.context import RunContext

logger = logging.getLogger(__name__)


class ConfidenceVote(Strategy):
    """Sample `n` answers and vote with each sample's confidence (in the manner of DeepConf).

    A sample's confidence is read from its token log-probabilities (`measure`). `weighted`
    gives each vote the weight exp(confidence); `filtered` first drops all but the surest
    `keep` share, then votes weighted. With `online`, `warmup` samples are drawn whole to learn
    a threshold (the least sure of their `keep` share); the rest are decoded `segment` tokens
    at a time and a sample is cut, and left out of the vote, as soon as a window of `group`
    tokens falls below the threshold.
    """

    kind: Literal["confidence-vote"] = "confidence-vote"
    n: int = Field(8, ge=1, le=4096)
    """Samples drawn (warm-up included)."""
    select: Literal["weighted", "filtered"] = "weighted"
    """How confidence enters the vote."""
    measure: ConfidenceMeasure = "lowest-group"
    """Which tokens the confidence is read from (online runs always use lowest-group)."""
    group: int = Field(DEFAULT_GROUP, ge=1)
    """Tokens per window of the lowest-group and tail measures."""
    keep: float = Field(0.5, gt=0.0, le=1.0)
    """Share of samples kept by the filter, and that sets the online threshold."""
    online: bool = False
    """Cut samples whose running confidence falls below a threshold learned from warm-up."""
    warmup: int = Field(4, ge=1)
    """Online: samples decoded whole to learn the threshold."""
    segment: int = Field(32, ge=1)
    """Online: tokens decoded between two confidence checks of a sample."""
    summary: ClassVar[str] = "N samples, vote weighted or filtered by token confidence"

    @model_validator(mode="after")
    def _warmup_within_n(self) -> ConfidenceVote:
        if self.online and self.warmup > self.n:
            raise ValueError(f"warmup={self.warmup} cannot exceed n={self.n}")
        return self

    async def run(self, ctx: RunContext, inputs: list[Candidate]) -> list[Candidate]:
        prefix = self.continuation(inputs)
        request = ctx.request(prefix=prefix, logprobs=0, **self.sampling_overrides())
        measure: ConfidenceMeasure = "lowest-group" if self.online else self.measure
        first = self.warmup if self.online else self.n

        async def whole(i: int) -> Candidate | None:
            fresh = request.model_copy(update={"request_id": f"{request.request_id}-{i}"})
            try:
                completion, node = await ctx.generate(fresh, label=f"confidence {i}")
            except BudgetExhausted:
                return None
            return self._scored(ctx.candidate(completion, node, prefix=prefix), completion, measure)

        drawn = await gather_or_cancel(*(whole(i) for i in range(first)))
        samples = [c for c in drawn if c is not None]
        cut = 0
        threshold: float | None = None
        known = [c.metadata["confidence"] for c in samples if c.metadata["confidence"] is not None]
        if self.online and self.n > first:
            if known:
                threshold = threshold_from_warmup(known, self.keep)
                online = Segmented(ctx, self, request, prefix, threshold)
                later = await gather_or_cancel(*(online.sample(i) for i in range(first, self.n)))
                cut = sum(c is None for c in later)
            else:
                logger.warning("no log-probabilities in the warm-up samples: no online filter")
                later = await gather_or_cancel(*(whole(i) for i in range(first, self.n)))
            samples += [c for c in later if c is not None]
        if any(c.metadata["confidence"] is not None for c in samples):
            weight: Callable[[Candidate], float] | None = confidence_weight
            voters = samples
            if self.select == "filtered" and not self.online:
                voters = keep_most_confident(samples, self.keep)
        else:
            # a worker that returns no log-probabilities: every sample votes once
            logger.warning("no sample has log-probabilities; confidence-vote counts votes")
            weight, voters = None, samples
        for candidate in samples:
            candidate.metadata["voted"] = any(candidate is v for v in voters)
        ranked = rank_by_vote(
            ctx,
            voters,
            weight=weight,
            measure=measure,
            threshold=threshold,
            cut_samples=cut,
            voters=len(voters),
            weighted=weight is not None,
        )
        return ranked + [c for c in samples if all(c is not v for v in voters)]

    def _scored(
        self, candidate: Candidate, completion: Completion, measure: ConfidenceMeasure
    ) -> Candidate:
        values = token_values(completion.logprobs)
        candidate.metadata["confidence"] = confidence(values, measure, self.group)
        return candidate


class Segmented:
    """Online samples of a confidence vote: decoded a segment at a time, cut when unsure."""

    def __init__(
        self,
        ctx: RunContext,
        config: ConfidenceVote,
        request: GenerationRequest,
        prefix: str,
        threshold: float,
    ) -> None:
        self.ctx = ctx
        self.config = config
        self.request = request
        self.prefix = prefix
        self.threshold = threshold

    async def sample(self, i: int) -> Candidate | None:
        """One sample decoded segment by segment; None when it was cut or refused."""
        ctx, config = self.ctx, self.config
        text = ""
        values: list[float] = []
        left = self.request.params.max_tokens
        node: str | None = None
        spent = 0
        for part in range(left):
            params = self.request.params.model_copy(
                update={"max_tokens": min(config.segment, left)}
            )
            fresh = self.request.model_copy(
                update={
                    "request_id": f"{self.request.request_id}-{i}-{part}",
                    "prefix": self.prefix + text,
                    "params": params,
                }
            )
            try:
                completion, node = await ctx.generate(
                    fresh, parent=node, label=f"confidence {i}.{part}"
                )
            except BudgetExhausted:
                return None
            text += completion.text
            values += token_values(completion.logprobs)
            used = completion.usage.completion_tokens
            spent += used
            left -= used
            running = confidence(values, "lowest-group", config.group)
            if len(values) >= config.group and running is not None and running < self.threshold:
                ctx.trace.update(node, cut=True, confidence=round(running, 4))
                return None
            if completion.finish_reason != "length" or left <= 0 or used == 0:
                break
        candidate = ctx.candidate_from_text(self.prefix + text, node, completion.finish_reason)
        candidate.completion_tokens = spent
        candidate.mean_logprob = sum(values) / len(values) if values else None
        candidate.metadata["confidence"] = confidence(values, "lowest-group", config.group)
        return candidate
