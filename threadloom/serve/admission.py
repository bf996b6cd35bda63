"""Back-pressure: at most N runs execute at once, a bounded queue waits, the rest get 429."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from threadloom.serve.http_errors import ApiError


@dataclass
class Slot:
    """A held run slot; release it exactly once."""

    admission: Admission
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.admission._release()


class Admission:
    """Run slots with a bounded wait queue.

    Args:
        max_running: Runs that may execute at once.
        max_queued: Requests that may wait for a slot; one more is refused with 429.
    """

    def __init__(self, max_running: int, max_queued: int) -> None:
        self.max_running = max_running
        self.max_queued = max_queued
        self.running = 0
        self.queued = 0
        self._free = asyncio.Semaphore(max_running)
        self._mean_run_s = 1.0

    async def acquire(self) -> Slot:
        """Wait for a run slot.

        Raises:
            ApiError: 429 with a Retry-After when the queue is full.
        """
        if self.running + self.queued >= self.max_running + self.max_queued:
            raise ApiError(
                429,
                f"the server is busy: {self.running} runs executing and {self.queued} waiting "
                "(the queue is full); retry after the time in Retry-After",
                type="rate_limit_error",
                code="queue_full",
                retry_after_s=self.retry_after_s(),
            )
        self.queued += 1
        try:
            await self._free.acquire()
        finally:
            self.queued -= 1
        self.running += 1
        return Slot(self)

    def _release(self) -> None:
        self.running -= 1
        self._free.release()

    def observe(self, seconds: float) -> None:
        """Record how long a run took; it drives the Retry-After estimate."""
        self._mean_run_s = 0.8 * self._mean_run_s + 0.2 * seconds

    def retry_after_s(self) -> float:
        """About when a queued request would get a slot: rounds of runs ahead of it."""
        rounds = (self.queued + 1) / self.max_running
        return max(1.0, rounds * self._mean_run_s)
