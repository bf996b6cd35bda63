"""Building a request's final Completion from what its stream delivered."""

from __future__ import annotations

import time
from collections.abc import Iterable

from threadloom.types import (
    Completion,
    FinishReason,
    GenerationRequest,
    Timings,
    TokenLogprob,
    TokenUsage,
)

__all__ = ["CompletionBuilder", "aborted_completion"]


class CompletionBuilder:
    """Accumulates one request's deltas and becomes its Completion.

    A plain object (no validation per delta): the hot path only appends text and adds counts.
    Fields a backend learns at the end (cached prompt tokens, draft counters, engine-side
    timings) are set on it directly before `finish`.

    Args:
        request: The request being served; its id and sampling settings shape the result.
        worker_id: Name of the worker that serves it.
        prompt_tokens: Prompt length in tokens, when known up front.
        started: `time.perf_counter()` at submission; now by default.
    """

    __slots__ = (
        "accepted_tokens",
        "cached_prompt_tokens",
        "completion_tokens",
        "drafted_tokens",
        "first_token_s",
        "logprobs",
        "parts",
        "prompt_tokens",
        "queued_s",
        "request",
        "started",
        "worker_id",
    )

    def __init__(
        self,
        request: GenerationRequest,
        worker_id: str,
        *,
        prompt_tokens: int = 0,
        started: float | None = None,
    ) -> None:
        self.request = request
        self.worker_id = worker_id
        self.started = time.perf_counter() if started is None else started
        self.parts: list[str] = []
        self.prompt_tokens = prompt_tokens
        self.cached_prompt_tokens = 0
        self.completion_tokens = 0
        self.logprobs: list[TokenLogprob] | None = (
            [] if request.params.logprobs is not None else None
        )
        self.queued_s = 0.0
        self.first_token_s = 0.0
        """Seconds from `started` to the first token (0 until one arrives)."""
        self.drafted_tokens = 0
        self.accepted_tokens = 0

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self.parts)

    def add(
        self, text: str, tokens: int = 0, logprobs: Iterable[TokenLogprob] | None = None
    ) -> None:
        """Record one delta: its text, the tokens it took, and their log-probabilities."""
        if (text or tokens) and not self.first_token_s:
            self.first_token_s = time.perf_counter() - self.started
        if text:
            self.parts.append(text)
        self.completion_tokens += tokens
        if logprobs is not None and self.logprobs is not None:
            self.logprobs.extend(logprobs)

    def mark_started(self) -> None:
        """The request left the queue now (sets `queued_s`)."""
        self.queued_s = time.perf_counter() - self.started

    def finish(self, reason: FinishReason, stop_reason: str | None = None) -> Completion:
        """The final Completion; `stop_reason` is kept only when the reason is "stop"."""
        total = time.perf_counter() - self.started
        return Completion(
            text="".join(self.parts),
            finish_reason=reason,
            stop_reason=stop_reason if reason == "stop" else None,
            usage=TokenUsage(
                prompt_tokens=self.prompt_tokens,
                completion_tokens=self.completion_tokens,
                cached_prompt_tokens=min(self.cached_prompt_tokens, self.prompt_tokens),
            ),
            logprobs=tuple(self.logprobs) if self.logprobs is not None else None,
            worker_id=self.worker_id,
            request_id=self.request.request_id,
            timings=Timings(
                queued_s=self.queued_s, first_token_s=self.first_token_s, total_s=total
            ),
            drafted_tokens=self.drafted_tokens,
            accepted_tokens=self.accepted_tokens,
        )

    def abort(self) -> Completion:
        """The Completion of a request stopped early: what was received, reason "abort"."""
        return self.finish("abort")


def aborted_completion(
    request: GenerationRequest,
    worker_id: str,
    *,
    text: str = "",
    completion_tokens: int = 0,
    prompt_tokens: int = 0,
    queued_s: float = 0.0,
    total_s: float = 0.0,
) -> Completion:
    """The Completion of a request aborted before (or without) a builder of its own.

    Args:
        request: The aborted request.
        worker_id: The worker (or pool) that answers for it.
        text: Text already delivered to the caller, if any.
        completion_tokens: Tokens already decoded for that text.
        prompt_tokens: Prompt tokens already read, if the backend got that far.
        queued_s: Time the request waited before it was aborted.
        total_s: Time from submission to the abort.
    """
    return Completion(
        text=text,
        finish_reason="abort",
        usage=TokenUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
        worker_id=worker_id,
        request_id=request.request_id,
        timings=Timings(queued_s=queued_s, total_s=total_s),
    )
