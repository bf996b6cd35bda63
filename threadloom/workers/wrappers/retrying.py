"""Retrying: a request that fails before its first token is sent again after a pause."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from threadloom.errors import ConfigError, RateLimited, WorkerUnavailable
from threadloom.types import GenerationRequest
from threadloom.workers.base import StreamDelta, Worker
from threadloom.workers.core import aborted_completion
from threadloom.workers.wrappers.base import Wrapper
from threadloom.workers.wrappers.signals import Closing

logger = logging.getLogger(__name__)

__all__ = ["Retrying"]


class Retrying(Wrapper):
    """Retries a request whose worker failed with a retryable error before any text arrived.

    Once text reached the consumer a failure is raised as it is: sending the request again
    would repeat that text. To continue a broken stream instead, wrap this in `Resuming`
    (`Resuming(Retrying(worker))`): each continuation is then retried like a new request.
    Pauses double from `backoff` up to `max_backoff`; a server's Retry-After (`RateLimited`)
    lengthens a pause, within `max_backoff`. An abort during a pause ends the request at once.

    Args:
        worker: The worker to retry on.
        attempts: Tries per request, the first included.
        backoff: First pause in seconds.
        max_backoff: Longest pause in seconds.
        retry_on: Errors worth another try (default: the retryable `WorkerUnavailable`).

    Raises:
        ConfigError: `attempts` below 1, or a negative pause.
    """

    def __init__(
        self,
        worker: Worker,
        *,
        attempts: int = 3,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        retry_on: tuple[type[Exception], ...] = (WorkerUnavailable,),
    ) -> None:
        if attempts < 1:
            raise ConfigError(f"Retrying needs attempts >= 1 (1: never retry), got {attempts}")
        if backoff < 0 or max_backoff < 0:
            raise ConfigError(
                f"Retrying pauses must be 0 or more seconds, got backoff={backoff}, "
                f"max_backoff={max_backoff}"
            )
        super().__init__(worker)
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.retry_on = retry_on
        self.retries = 0
        """Requests sent again after a failure, over this wrapper's life."""

    def delay(self, attempt: int, error: BaseException) -> float:
        """Seconds to wait after failed attempt number `attempt` (1 for the first)."""
        pause = self.backoff * 2 ** (attempt - 1)
        if isinstance(error, RateLimited) and error.retry_after_s is not None:
            pause = max(pause, error.retry_after_s)
        return min(pause, self.max_backoff)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        self.check_open()
        rid = request.request_id
        self._aborts.open(rid)
        try:
            for attempt in range(1, self.attempts + 1):
                delivered = False
                try:
                    async with Closing(self._relay(request)) as deltas:
                        async for delta in deltas:
                            delivered = delivered or bool(delta.text) or bool(delta.completion)
                            yield delta
                    return
                except self.retry_on as exc:
                    if delivered or attempt == self.attempts:
                        raise
                    pause = self.delay(attempt, exc)
                    logger.info("request %s failed on %s (%s); retry %d in %.2f s",
                                rid, self.worker_id, exc, attempt, pause)  # fmt: skip
                self.retries += 1
                if await self._pause(rid, pause) or self._aborts.asked(rid):
                    aborted = aborted_completion(request, self.worker_id)
                    yield StreamDelta(text="", completion=aborted)
                    return
        finally:
            self._aborts.close(rid)
