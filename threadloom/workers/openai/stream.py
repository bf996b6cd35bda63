"""What an OpenAI-compatible stream has delivered so far, and its final Completion."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from threadloom.errors import WorkerUnavailable
from threadloom.types import (
    Completion,
    FinishReason,
    GenerationRequest,
    Timings,
    TokenLogprob,
    TokenUsage,
)
from threadloom.workers.openai.protocol import Call
from threadloom.workers.openai.replies import ReplyUsage, parse_choices, parse_usage
from threadloom.workers.openai.tokens import TokenTally, settle_count

__all__ = ["StreamCut", "StreamState", "next_line"]


class StreamCut(WorkerUnavailable):
    """The server ended a stream before its finish reason (recovered by a plain request)."""


class StreamState:
    """What a stream has received so far; becomes its final Completion."""

    def __init__(self, started: float, max_tokens: int, where: str) -> None:
        self.started = started
        self.where = where
        self.queued_s = 0.0
        self.first_token_at = 0.0
        self.pieces: list[str] = []
        self.tally = TokenTally(max_tokens)
        self.logprobs: list[TokenLogprob] | None = None
        self.finish: FinishReason | None = None
        self.stop_reason: str | None = None
        self.usage: ReplyUsage | None = None
        self.saw_done = False
        self.last_tokens: int | None = None
        """Tokens of the last chunk's text, when its log-probabilities count them."""

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def take(self, chunk: dict[str, Any], call: Call, request: GenerationRequest) -> str:
        """Record one streamed chunk (or a whole reply); return its new text (what fits)."""
        self.usage = parse_usage(chunk) or self.usage
        text = ""
        self.last_tokens = None
        for choice in parse_choices(chunk, call.chat, request.params.stop):
            kept, logprobs = self.tally.admit(choice.text, choice.logprobs)
            text += kept
            if logprobs is not None:
                self.logprobs = (self.logprobs or []) + list(logprobs)
                self.last_tokens = (self.last_tokens or 0) + len(logprobs)
            if self.tally.cut:
                self.finish, self.stop_reason = "length", None
            elif choice.finish_reason is not None:
                self.finish = choice.finish_reason
                self.stop_reason = choice.stop_reason
        if text:
            self.pieces.append(text)
            self.first_token_at = self.first_token_at or time.perf_counter()
        return text

    def completion(self, worker_id: str, request: GenerationRequest) -> Completion:
        done = time.perf_counter()
        usage = self.usage or ReplyUsage()
        fewest = max(self.tally.counted, len(self.logprobs or ()))
        reported = None if self.finish == "abort" else usage.completion_tokens
        completion = settle_count(reported, fewest, request.params.max_tokens, where=self.where)
        return Completion(
            text=self.text,
            finish_reason=self.finish or "abort",
            stop_reason=self.stop_reason if self.finish == "stop" else None,
            usage=TokenUsage(
                prompt_tokens=usage.prompt,
                completion_tokens=completion,
                cached_prompt_tokens=usage.cached,
            ),
            logprobs=tuple(self.logprobs) if self.logprobs is not None else None,
            worker_id=worker_id,
            request_id=request.request_id,
            timings=Timings(
                queued_s=self.queued_s,
                first_token_s=(self.first_token_at - self.started) if self.first_token_at else 0.0,
                total_s=done - self.started,
            ),
        )


async def next_line(lines: AsyncIterator[str]) -> str | None:
    """The next line of a response, or None at its end."""
    try:
        return await lines.__anext__()
    except StopAsyncIteration:
        return None
