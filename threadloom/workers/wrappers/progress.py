"""One request's progress across broken streams: what it delivered, what it cost, what failed.

A stream that breaks after some text can continue as a new request: the text so far becomes the
assistant prefix and `max_tokens` shrinks by the tokens already produced, so the consumer sees
one coherent stream and the request never runs past its budget. Tokens are counted as the
worker reported them with each delta; a delta whose worker does not count is bounded by its
UTF-8 bytes. `Resuming` (one worker) and `Pool` (failover across members) both keep this book.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from threadloom.errors import WorkerUnavailable
from threadloom.types import Completion, FinishReason, GenerationRequest, TokenUsage
from threadloom.workers.base import StreamDelta, Worker, WorkerCapabilities
from threadloom.workers.core import aborted_completion

logger = logging.getLogger(__name__)

__all__ = ["Progress", "can_continue"]


def can_continue(request: GenerationRequest, capabilities: WorkerCapabilities) -> bool:
    """Whether a worker continues this request's text where it ends: a raw-text request always
    does; a chat request only where the worker continues an assistant prefix (otherwise it may
    answer in a new turn, and a resumed stream would not be one text)."""
    return request.text is not None or capabilities.continues_prefix


@dataclass(eq=False)
class Progress:
    """A request on its way through one or more attempts."""

    request: GenerationRequest
    texts: list[str] = field(default_factory=list)
    """Deltas delivered to the consumer since the request last started from scratch."""
    counts: list[int] = field(default_factory=list)
    """Tokens each of `texts` took (as counted by its worker, else at most its bytes)."""
    resumed_at: int = 0
    """Deltas delivered before the current attempt (its completion covers only the rest)."""
    failed: list[str] = field(default_factory=list)
    """Workers an attempt failed on, in order."""
    result: Completion | None = None
    """The request's Completion, once an attempt (or `end_here`) produced it."""

    def book(self, delta: StreamDelta) -> bool:
        """Book a delta of the current attempt: True for text to pass on to the consumer,
        False for the attempt's end (its completion, completed here, becomes `result`)."""
        if delta.completion is not None:
            self.result = self.finish(delta.completion)
            return False
        self.add(delta.text, delta.tokens)
        return True

    def broken(self, worker: Worker) -> WorkerUnavailable:
        """The error for an attempt whose stream ended without a completion."""
        return WorkerUnavailable(
            f"{worker.worker_id} ended request {self.request.request_id} without a result"
        )

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

    def next_request(self, *, resume: bool) -> GenerationRequest:
        """The request for the next attempt: the original, or a continuation of the text so far.

        Args:
            resume: The next worker continues a prefix; otherwise the request starts over and
                the text delivered so far no longer counts.
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
        """The request's completion: after a failure, the text delivered before the last attempt
        plus that attempt's (whose logprobs, if any, cover only the part it decoded)."""
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

    def end_here(self, finish_reason: FinishReason, worker_id: str) -> Completion:
        """End the request without a worker (aborted while waiting, or max_tokens spent);
        sets and returns `result`."""
        self.resumed_at = len(self.texts)
        if finish_reason == "abort":
            ending = aborted_completion(self.request, worker_id)
        else:
            ending = Completion(
                text="",
                finish_reason=finish_reason,
                worker_id=worker_id,
                request_id=self.request.request_id,
            )
        self.result = self.finish(ending)
        return self.result
