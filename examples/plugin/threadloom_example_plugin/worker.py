"""echo[:PREFIX]: a worker that answers without a model, by saying the question backwards.

It implements threadloom's Worker protocol directly (generate, stream, abort, capabilities,
close), which is all a new backend needs; a real one would call its engine where this one
reverses words.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from threadloom.errors import WorkerDead
from threadloom.types import Completion, FinishReason, GenerationRequest, TokenUsage
from threadloom.workers.base import StreamDelta, WorkerCapabilities, collect_stream


class EchoWorker:
    """Replies with PREFIX followed by the last user message's words in reverse order.

    Args:
        prefix: Text put before every reply.
        worker_id: Name used in traces.
    """

    def __init__(self, prefix: str = "", *, worker_id: str = "echo") -> None:
        self.prefix = prefix
        self.worker_id = worker_id
        self._aborted: set[str] = set()
        self._closed = False

    @classmethod
    def from_spec(cls, argument: str, **options: Any) -> EchoWorker:
        """'echo' or 'echo:PREFIX' (the text after the colon starts every reply)."""
        return cls(argument, **options)

    @property
    def capabilities(self) -> WorkerCapabilities:
        return WorkerCapabilities(max_context=100_000, max_batch=64, model="echo")

    async def generate(self, request: GenerationRequest) -> Completion:
        return await collect_stream(self.stream(request))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        if self._closed:
            raise WorkerDead(f"worker {self.worker_id} is closed")
        question = request.text or next(
            (m.content for m in reversed(request.messages or ()) if m.role == "user"), ""
        )
        words = (self.prefix.split() + question.split()[::-1]) or ["..."]
        limit = request.params.max_tokens
        finish: FinishReason = "length" if len(words) > limit else "stop"
        sent: list[str] = []
        for word in words[:limit]:
            if request.request_id in self._aborted:
                finish = "abort"
                break
            await asyncio.sleep(0)  # let other requests and cancellations run
            piece = word if not sent else f" {word}"
            sent.append(piece)
            yield StreamDelta(text=piece, tokens=1)
        self._aborted.discard(request.request_id)
        usage = TokenUsage(prompt_tokens=len(question.split()), completion_tokens=len(sent))
        completion = Completion(
            text="".join(sent),
            finish_reason=finish,
            usage=usage,
            worker_id=self.worker_id,
            request_id=request.request_id,
        )
        yield StreamDelta(text="", completion=completion)

    async def abort(self, request_id: str) -> bool:
        self._aborted.add(request_id)
        return True

    async def close(self) -> None:
        self._closed = True
