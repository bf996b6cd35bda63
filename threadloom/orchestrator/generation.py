"""One generation held to the run's limits while it streams: a deadline and a token grant.

The budget admits a generation before it starts (`BudgetTracker.begin_generation`); this module
enforces the limits while it runs:

- At the deadline (the wall-time budget) the request is aborted on the worker, which ends the
  stream with its own aborted completion. A worker that has not wound the request down within
  a short grace is no longer read: the guard stops, and reports what had arrived as aborted.
- Tokens are counted as they arrive (`StreamDelta.tokens`, or one per text delta when the worker
  does not count them). A
  worker that sends more than the grant, i.e. ignores `max_tokens`, is aborted at once; the
  excess is discarded, so the completion ends at the grant with `finish_reason="length"`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from threadloom.errors import WorkerError
from threadloom.types import Completion, GenerationRequest
from threadloom.workers.base import StreamDelta, Worker
from threadloom.workers.core import aborted_completion

logger = logging.getLogger(__name__)

DEADLINE_GRACE_S = 0.1
"""How long a worker may take, after the deadline's abort, to hand back its final completion."""
CUTOFF_GRACE_S = 1.0
"""How long a worker that overran its grant may take to hand back its final completion."""


class GenerationGuard:
    """Streams one request from a worker under a deadline and a token grant.

    Args:
        worker: The worker that runs the request.
        request: The request (its `max_tokens` already clipped to the grant).
        granted: Completion tokens the budget reserved for it.
        deadline: Event-loop time at which to abort it (None: no deadline).
        on_deadline: Called once when the deadline aborts it (marks the budget exhausted).
    """

    def __init__(
        self,
        worker: Worker,
        request: GenerationRequest,
        granted: int,
        deadline: float | None,
        *,
        on_deadline: Callable[[], None],
    ) -> None:
        self.worker = worker
        self.request = request
        self.granted = granted
        self.deadline = deadline
        self._on_deadline = on_deadline
        self._texts: list[str] = []
        self._counted = 0
        self._cut = False
        self._stop_reading_at: float | None = (
            None if deadline is None else deadline + DEADLINE_GRACE_S
        )
        self._stream: AsyncIterator[StreamDelta] | None = None
        self._aborting: asyncio.Task[Any] | None = None
        self.discarded_tokens = 0
        """Tokens the worker sent past its grant (decoded, not delivered)."""
        self.expired = False
        """True once the deadline aborted the request."""

    async def run(self) -> AsyncIterator[StreamDelta]:
        """The accepted deltas; the last one carries the Completion."""
        timer = None
        if self.deadline is not None:
            timer = asyncio.get_running_loop().call_at(self.deadline, self._expire)
        stream = self._stream = aiter(self.worker.stream(self.request))
        try:
            while True:
                delta: StreamDelta | None
                try:
                    if self._stop_reading_at is None:
                        delta = await anext(stream)
                    else:
                        delta = await self._next_before(self._stop_reading_at)
                except StopAsyncIteration:
                    break
                if delta is None:
                    logger.warning(
                        "worker %s did not end request %s after its abort; no longer read",
                        self.worker.worker_id, self.request.request_id,
                    )
                    await self._close_stream()
                    break
                text = self._accept(delta) if delta.text else ""
                if self._cut and self._aborting is None:
                    await self._abort_now()
                if delta.completion is not None:
                    await self._end_stream()
                    if self._cut:
                        delta = StreamDelta(text=text, completion=self._final(delta.completion))
                    yield delta
                    return
                if text:
                    yield delta if text == delta.text else StreamDelta(text=text)
            yield StreamDelta(text="", completion=self.aborted())
        finally:
            if timer is not None:
                timer.cancel()

    async def abandon(self) -> Completion:
        """The caller stopped reading: abort the request, close its stream, and return an
        aborted completion for what was delivered."""
        with contextlib.suppress(Exception):
            await self.worker.abort(self.request.request_id)
        await self._close_stream()
        return self.aborted()

    def aborted(self) -> Completion:
        """An aborted completion holding the text delivered so far."""
        return aborted_completion(
            self.request,
            self.worker.worker_id,
            text="".join(self._texts),
            completion_tokens=self._counted,
        )

    async def _next_before(self, stop_reading_at: float) -> StreamDelta | None:
        """The worker's next delta; None once the time to read it has run out."""
        assert self._stream is not None
        limit = asyncio.timeout_at(stop_reading_at)
        try:
            async with limit:
                return await anext(self._stream)
        except TimeoutError:
            if limit.expired():
                return None
            raise

    async def _end_stream(self) -> None:
        """Let the worker's stream run to its end after its final delta.

        A stream left suspended would be closed later by the event loop's finaliser, which
        costs the loop a wake-up per generation. One that yields past its final delta or does
        not end in time is closed; an error it raises then is logged, as the completion stands.
        """
        assert self._stream is not None
        try:
            if self._stop_reading_at is None:
                await anext(self._stream)
            else:
                await self._next_before(self._stop_reading_at)
        except StopAsyncIteration:
            return
        except Exception as exc:
            logger.warning(
                "worker %s failed after completing request %s: %s",
                self.worker.worker_id, self.request.request_id, exc,
            )
            return
        await self._close_stream()

    def _accept(self, delta: StreamDelta) -> str:
        """Count a delta's tokens against the grant; the text to deliver ("" past the grant)."""
        tokens = 1 if delta.tokens is None else delta.tokens
        if self._cut:
            self.discarded_tokens += tokens
            return ""
        if self._counted + tokens > self.granted:
            self._cut = True
            self.discarded_tokens += tokens
            logger.warning(
                "worker %s sent more than the %d tokens granted to request %s: aborted",
                self.worker.worker_id, self.granted, self.request.request_id,
            )
            cutoff = asyncio.get_running_loop().time() + CUTOFF_GRACE_S
            if self._stop_reading_at is None or cutoff < self._stop_reading_at:
                self._stop_reading_at = cutoff
            return ""
        self._counted += tokens
        self._texts.append(delta.text)
        return delta.text

    def _final(self, completion: Completion) -> Completion:
        if not self._cut:
            return completion
        logprobs = completion.logprobs[: self._counted] if completion.logprobs else None
        usage = completion.usage.model_copy(update={"completion_tokens": self._counted})
        return completion.model_copy(
            update={
                "text": "".join(self._texts),
                "finish_reason": "length",
                "stop_reason": None,
                "usage": usage,
                "logprobs": logprobs,
            }
        )

    def _expire(self) -> None:
        self.expired = True
        self._on_deadline()
        self._abort()

    async def _abort_now(self) -> None:
        """Abort at once (before reading on), so an overrunning worker stops within a step."""
        self._abort()
        assert self._aborting is not None
        with contextlib.suppress(Exception):
            await asyncio.shield(self._aborting)

    def _abort(self) -> None:
        if self._aborting is None:
            self._aborting = asyncio.ensure_future(self.worker.abort(self.request.request_id))
            self._aborting.add_done_callback(_log_abort_failure)

    async def _close_stream(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()


def _log_abort_failure(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None and not isinstance(exc, WorkerError):
        logger.warning("aborting a request failed: %s", exc)
