"""What an OpenAI-compatible stream has delivered so far, and its final Completion."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from threadloom.errors import WorkerUnavailable
from threadloom.types import Completion, FinishReason, GenerationRequest, TokenLogprob
from threadloom.workers.core import CompletionBuilder
from threadloom.workers.openai.protocol import Call
from threadloom.workers.openai.replies import ReplyUsage, parse_choices, parse_usage
from threadloom.workers.openai.tokens import TokenTally, settle_count

__all__ = ["StreamCut", "StreamState", "next_line"]


class StreamCut(WorkerUnavailable):
    """The server ended a stream before its finish reason (recovered by a plain request)."""


class StreamState:
    """What a stream has received so far; becomes its final Completion.

    The text and first-token time go to a CompletionBuilder; the server's usage, which only the
    end of a stream may carry, is settled against what the client counted itself.
    """

    def __init__(self, request: GenerationRequest, worker_id: str, where: str) -> None:
        self.result = CompletionBuilder(request, worker_id)
        self.where = where
        self.tally = TokenTally(request.params.max_tokens)
        self.logprobs: list[TokenLogprob] | None = None
        self.finish: FinishReason | None = None
        self.stop_reason: str | None = None
        self.usage: ReplyUsage | None = None
        self.saw_done = False
        self.last_tokens: int | None = None
        """Tokens of the last chunk's text, when its log-probabilities count them."""

    @property
    def started(self) -> float:
        return self.result.started

    @property
    def queued_s(self) -> float:
        return self.result.queued_s

    @property
    def text(self) -> str:
        return self.result.text

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
        self.result.add(text)
        return text

    def completion(self) -> Completion:
        """The final Completion; a stream that ended without a finish reason was aborted."""
        usage = self.usage or ReplyUsage()
        fewest = max(self.tally.counted, len(self.logprobs or ()))
        reported = None if self.finish == "abort" else usage.completion_tokens
        result = self.result
        result.prompt_tokens = usage.prompt
        result.cached_prompt_tokens = usage.cached
        result.completion_tokens = settle_count(
            reported, fewest, result.request.params.max_tokens, where=self.where
        )
        result.logprobs = self.logprobs
        return result.finish(self.finish or "abort", self.stop_reason)


async def next_line(lines: AsyncIterator[str]) -> str | None:
    """The next line of a response, or None at its end."""
    try:
        return await lines.__anext__()
    except StopAsyncIteration:
        return None
