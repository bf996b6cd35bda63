"""One request's way through a RayPool: what it streamed, what it cost, where it failed."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from threadloom.types import Completion, GenerationRequest, TokenUsage
from threadloom.workers.ray.lanes import Lane

logger = logging.getLogger(__name__)

__all__ = ["Attempt"]


@dataclass(eq=False)
class Attempt:
    """A request on its way through the pool, across failovers."""

    request: GenerationRequest
    started: float = field(default_factory=time.perf_counter)
    lane: Lane | None = None
    reserved: int = 0
    """max_tokens reserved on the current lane (its load estimate)."""
    texts: list[str] = field(default_factory=list)
    """Deltas delivered to the consumer since the request last started from scratch."""
    counts: list[int] = field(default_factory=list)
    """Tokens each of `texts` took (as counted by its worker, else at most its bytes)."""
    resumed_at: int = 0
    """Deltas streamed before the current attempt (its completion covers only the rest)."""
    failed: list[str] = field(default_factory=list)
    inbox: asyncio.Queue[Any] | None = None
    """Where the lane's poller delivers this request's chunks once it is open."""

    def add(self, text: str, tokens: int | None) -> None:
        """Book a delta delivered to the consumer."""
        self.texts.append(text)
        self.counts.append(tokens if tokens is not None else len(text.encode("utf-8", "replace")))

    @property
    def spent(self) -> int:
        """Tokens of the delivered text."""
        return sum(self.counts)

    @property
    def left(self) -> int:
        """Tokens of max_tokens the delivered text leaves."""
        return self.request.params.max_tokens - self.spent

    def now(self, *, resume: bool) -> GenerationRequest:
        """The request for the next attempt: the original, or a resumption of streamed text.

        Args:
            resume: The next worker continues a prefix; otherwise the request starts over.
        """
        if not resume and self.texts:
            logger.warning(
                "request %s restarts from scratch: its next worker cannot continue a prefix",
                self.request.request_id,
            )
            self.texts, self.counts = [], []
        self.resumed_at = len(self.texts)
        if not self.texts:
            return self.request
        params = self.request.params
        return self.request.model_copy(
            update={
                "prefix": self.request.prefix + "".join(self.texts),
                "params": params.model_copy(update={"max_tokens": max(1, self.left)}),
            }
        )

    def finish(self, completion: Completion) -> Completion:
        """The request's completion: after a failover, the streamed text plus the last
        attempt's (its logprobs, if any, cover only the part that attempt decoded)."""
        if not self.failed:
            return completion
        usage = completion.usage
        return completion.model_copy(
            update={
                "text": "".join(self.texts[: self.resumed_at]) + completion.text,
                "usage": TokenUsage(
                    prompt_tokens=usage.prompt_tokens,
                    cached_prompt_tokens=usage.cached_prompt_tokens,
                    completion_tokens=sum(self.counts[: self.resumed_at]) + usage.completion_tokens,
                ),
                "request_id": self.request.request_id,
                "attempts": len(self.failed) + 1,
                "failed_workers": tuple(self.failed),
            }
        )

    def local(self, finish_reason: str, worker_id: str) -> Completion:
        """A completion made here, without a worker (aborted while waiting, tokens spent)."""
        self.resumed_at = len(self.texts)
        return self.finish(
            Completion(
                text="",
                finish_reason=finish_reason,  # type: ignore[arg-type]
                worker_id=worker_id,
                request_id=self.request.request_id,
            )
        )
