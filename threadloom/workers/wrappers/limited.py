"""ConcurrencyLimited: at most N requests in flight on a worker; the rest wait their turn."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator

from threadloom.errors import ConfigError
from threadloom.types import GenerationRequest
from threadloom.workers.base import StreamDelta, Worker, WorkerCapabilities
from threadloom.workers.core import aborted_completion
from threadloom.workers.wrappers.base import Wrapper
from threadloom.workers.wrappers.signals import Closing

__all__ = ["ConcurrencyLimited", "Slots"]


class Slots:
    """`limit` slots handed out in arrival order; a waiter can be dropped from the queue."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._queue: OrderedDict[tuple[str, int], asyncio.Future[bool]] = OrderedDict()
        self._arrivals = 0

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def take(self, key: str) -> bool:
        """Wait for a slot; False when `drop(key)` took the waiter out of the queue."""
        if self.used < self.limit and not self._queue:
            self.used += 1
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._arrivals += 1
        place = (key, self._arrivals)
        self._queue[place] = waiter
        try:
            return await waiter
        except asyncio.CancelledError:
            if self._queue.get(place) is waiter:
                del self._queue[place]
            elif waiter.done() and not waiter.cancelled() and waiter.result():
                self.give_back()  # handed over just as the waiter was cancelled
            raise

    def give_back(self) -> None:
        """Return a slot: to the longest waiter, or to the free ones."""
        while self._queue:
            _, waiter = self._queue.popitem(last=False)
            if not waiter.done():
                waiter.set_result(True)
                return
        self.used -= 1

    def drop(self, key: str) -> bool:
        """Take a waiter out of the queue (its `take` answers False); False if not waiting."""
        for place, waiter in self._queue.items():
            if place[0] == key and not waiter.done():
                del self._queue[place]
                waiter.set_result(False)
                return True
        return False


class ConcurrencyLimited(Wrapper):
    """At most `limit` requests run on the worker at once; the others queue here, in order.

    A queued request never reaches the worker if it is aborted (it ends at once with
    finish_reason "abort") or its consumer goes away (cancelled, or stopped iterating).

    Args:
        worker: The worker to protect.
        limit: Requests in flight at most.

    Raises:
        ConfigError: `limit` is below 1.
    """

    def __init__(self, worker: Worker, limit: int) -> None:
        if limit < 1:
            raise ConfigError(f"ConcurrencyLimited needs a limit of at least 1, got {limit}")
        super().__init__(worker)
        self.limit = limit
        self._slots = Slots(limit)

    @property
    def in_flight(self) -> int:
        """Requests running on the worker now."""
        return self._slots.used

    @property
    def queued(self) -> int:
        """Requests waiting for a slot."""
        return self._slots.waiting

    @property
    def capabilities(self) -> WorkerCapabilities:
        caps = self.inner.capabilities
        return caps.model_copy(update={"max_batch": min(caps.max_batch, self.limit)})

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        self.check_open()
        rid = request.request_id
        self._aborts.open(rid)
        try:
            granted = await self._slots.take(rid)
            if granted and self._aborts.asked(rid):  # aborted just as its turn came
                self._slots.give_back()
                granted = False
            if not granted:
                yield StreamDelta(text="", completion=aborted_completion(request, self.worker_id))
                return
            try:
                async with Closing(self._relay(request)) as deltas:
                    async for delta in deltas:
                        yield delta
            finally:
                self._slots.give_back()
        finally:
            self._aborts.close(rid)

    async def abort(self, request_id: str) -> bool:
        if self._slots.drop(request_id):
            self._aborts.ask(request_id)
            return True
        return await super().abort(request_id)
