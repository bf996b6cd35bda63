"""FakeWorker: a scripted, deterministic worker. A test double for strategy logic only."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from threadloom.errors import ConfigError, ContextLengthError
from threadloom.types import FinishReason, GenerationRequest, TokenLogprob
from threadloom.workers.base import StreamDelta, WorkerCapabilities
from threadloom.workers.core import BaseWorker, CompletionBuilder

Script = Sequence[str] | Callable[[GenerationRequest, int], str]
Delay = float | Callable[[GenerationRequest], float]

_TOKEN = re.compile(r"\s*\S+")
_ABORT_POLL_S = 0.02


class FakeWorker(BaseWorker):
    """Replies from a script instead of a model.

    Args:
        script: Replies used in turn (cycled), or a function of (request, call index) -> reply.
        token_delay_s: Sleep per emitted token, to simulate decoding time (0 = none); or a
            function of the request giving its delay.
        worker_id: Name used in traces.
        max_context: Context window in words: a prompt that long raises ContextLengthError.
        honours_max_tokens: False imitates a server that ignores `max_tokens`.
        honours_abort: False imitates a worker that never stops a request it was asked to
            abort (`abort` still answers True while the request runs).
        max_concurrency: Requests decoded at once; more wait in a queue (None: no limit).

    Tokens are whitespace-separated words; each token's log-probability is a deterministic
    function of its text, so tie-breaking by log-probability is testable.
    """

    def __init__(
        self,
        script: Script = ("42",),
        *,
        token_delay_s: Delay = 0.0,
        worker_id: str = "fake",
        max_context: int = 4096,
        honours_max_tokens: bool = True,
        honours_abort: bool = True,
        max_concurrency: int | None = None,
    ) -> None:
        if not callable(script) and not script:
            raise ConfigError("FakeWorker needs at least one scripted reply; pass script=(...)")
        if max_concurrency is not None and max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self._script = script
        self.token_delay_s = token_delay_s
        self.worker_id = worker_id
        self._max_context = max_context
        self.honours_max_tokens = honours_max_tokens
        self.honours_abort = honours_abort
        self.max_concurrency = max_concurrency
        self._decoding = 0
        self._slot_freed: asyncio.Event | None = None
        self._queued: dict[str, asyncio.Event] = {}
        self._calls = 0
        self._aborted: set[str] = set()
        self._running: set[str] = set()
        self.requests: list[GenerationRequest] = []
        """Every request received, in order."""
        self.tokens_emitted = 0
        """Completion tokens produced, across all requests (aborted ones included)."""
        self.aborted: list[str] = []
        """Ids of the requests an abort reached while they ran, in order."""

    @property
    def capabilities(self) -> WorkerCapabilities:
        return WorkerCapabilities(
            logprobs=True,
            max_context=self._max_context,
            max_batch=self.max_concurrency or 1024,
            model="fake",
        )

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def stats(self) -> dict[str, Any]:
        """Requests received, tokens emitted and requests running (it never speculates)."""
        return {
            "requests": len(self.requests),
            "tokens_emitted": self.tokens_emitted,
            "live_requests": len(self._running),
            "speculation": {},
        }

    def _reply(self, request: GenerationRequest) -> str:
        index = self._calls
        self._calls += 1
        if callable(self._script):
            return self._script(request, index)
        return self._script[index % len(self._script)]

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        self.check_open()
        prompt_tokens = _prompt_tokens(request)
        if prompt_tokens >= self._max_context:
            raise ContextLengthError(
                f"the prompt is {prompt_tokens} words but worker {self.worker_id} holds "
                f"{self._max_context}: shorten the prompt or raise max_context",
                prompt_tokens=prompt_tokens,
                context_length=self._max_context,
            )
        self.requests.append(request)
        reply = self._reply(request)
        params = request.params
        hits = [(i, s) for s in params.stop if (i := reply.find(s)) >= 0]
        stop_reason = min(hits)[1] if hits else None
        if hits:
            reply = reply[: min(hits)[0]]
        tokens = _TOKEN.findall(reply)
        finish: FinishReason = "stop"
        if len(tokens) > params.max_tokens and self.honours_max_tokens:
            tokens, finish = tokens[: params.max_tokens], "length"
        delay = self.token_delay_s(request) if callable(self.token_delay_s) else self.token_delay_s
        result = CompletionBuilder(request, self.worker_id, prompt_tokens=prompt_tokens)
        wants_logprobs = params.logprobs is not None
        self._running.add(request.request_id)
        queued: str | None = request.request_id  # until it holds a decoding slot
        try:
            queued = await self._wait_for_slot(request.request_id)
            if queued is not None:
                finish = "abort"
                tokens = []
            for token in tokens:
                if request.request_id in self._aborted:
                    finish = "abort"
                    break
                if delay:
                    if await self._pause(request.request_id, delay):
                        finish = "abort"
                        break
                else:
                    await asyncio.sleep(0)
                self.tokens_emitted += 1
                if wants_logprobs:
                    logprob = TokenLogprob(token=token, logprob=_fake_logprob(token))
                    result.add(token, 1, (logprob,))
                else:
                    result.add(token, 1)
                yield StreamDelta(text=token, tokens=1)
        finally:
            self._running.discard(request.request_id)
            self._aborted.discard(request.request_id)
            if queued is None:
                self._free_slot()
        yield StreamDelta(text="", completion=result.finish(finish, stop_reason))

    async def _wait_for_slot(self, request_id: str) -> str | None:
        """Take a decoding slot; the request id instead if it was aborted while it waited."""
        if self.max_concurrency is None:
            return None
        gate = self._queued[request_id] = asyncio.Event()
        try:
            while self._decoding >= self.max_concurrency:
                if self._slot_freed is None:
                    self._slot_freed = asyncio.Event()
                freed = self._slot_freed
                waits = {asyncio.ensure_future(freed.wait()), asyncio.ensure_future(gate.wait())}
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiting in waits:
                        waiting.cancel()
                if gate.is_set():
                    return request_id
        finally:
            del self._queued[request_id]
        self._decoding += 1
        return None

    def _free_slot(self) -> None:
        if self.max_concurrency is None:
            return
        self._decoding -= 1
        if self._slot_freed is not None:
            self._slot_freed.set()
            self._slot_freed = None

    async def _pause(self, request_id: str, delay: float) -> bool:
        """Sleep one token's time in short slices; True as soon as the request is aborted."""
        end = time.perf_counter() + delay
        while (left := end - time.perf_counter()) > 0:
            await asyncio.sleep(min(left, _ABORT_POLL_S))
            if request_id in self._aborted:
                return True
        return False

    async def abort(self, request_id: str) -> bool:
        gate = self._queued.get(request_id)
        if gate is not None and self.honours_abort:
            self.aborted.append(request_id)
            gate.set()
            return True
        if request_id in self._running:
            self.aborted.append(request_id)
            if self.honours_abort:
                self._aborted.add(request_id)
            return True
        return False


def _fake_logprob(token: str) -> float:
    """A deterministic pseudo log-probability in (-3, 0) derived from the token's text."""
    return -3.0 * (1.0 - math.exp(-(sum(map(ord, token.strip())) % 97) / 30.0))


def _prompt_tokens(request: GenerationRequest) -> int:
    parts = [m.content for m in request.messages or ()] + [request.text or "", request.prefix]
    return sum(len(p.split()) for p in parts)
