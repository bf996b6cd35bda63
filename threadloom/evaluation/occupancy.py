"""Keep a worker's batch full across problems: a first-come slot gate that measures occupancy.

A bench runs many problems at once; each of their generations waits here for one of the
worker's batch slots, in the order it was asked for. A slot freed by any problem's sample goes
to the next waiting sample at once, so the batch stays full instead of idling until the
slowest sample of a whole problem ends.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator

from threadloom.errors import ConfigError
from threadloom.types import Completion, GenerationRequest
from threadloom.workers.base import StreamDelta, Worker, WorkerCapabilities, collect_stream
from threadloom.workers.core import aborted_completion


class SlotGate:
    """A Worker that lets at most `slots` requests run on `inner` at once, first come first served.

    It does not own `inner`: closing the gate leaves the worker open. A request aborted while
    it waits for a slot never reaches the worker; it ends at once as aborted.

    Args:
        inner: The worker whose batch is shared.
        slots: Requests allowed on the worker together (default: its `max_batch`).
    """

    def __init__(self, inner: Worker, slots: int | None = None) -> None:
        size = slots if slots is not None else inner.capabilities.max_batch
        if size < 1:
            raise ConfigError(f"a slot gate needs at least 1 slot, got {size}")
        self.inner = inner
        self.slots = size
        self.worker_id = inner.worker_id
        self._free = size
        self._waiting: deque[tuple[str, asyncio.Future[bool]]] = deque()
        self._running: set[str] = set()
        self._started = time.perf_counter()
        self._last = self._started
        self._busy_area = 0.0
        self._busy_time = 0.0

    @property
    def capabilities(self) -> WorkerCapabilities:
        return self.inner.capabilities

    # ----- measurement ----------------------------------------------------------------------

    def _tick(self) -> None:
        now = time.perf_counter()
        running = len(self._running)
        self._busy_area += running * (now - self._last)
        if running:
            self._busy_time += now - self._last
        self._last = now

    def reset_stats(self) -> None:
        """Start measuring afresh (e.g. after a warm-up)."""
        self._tick()
        self._started = self._last
        self._busy_area = self._busy_time = 0.0

    def mean_occupancy(self) -> float:
        """Requests running on the worker, averaged over the time since the last reset."""
        self._tick()
        elapsed = self._last - self._started
        return self._busy_area / elapsed if elapsed > 0 else 0.0

    def busy_occupancy(self) -> float:
        """Requests running, averaged over the time at least one was running."""
        self._tick()
        return self._busy_area / self._busy_time if self._busy_time > 0 else 0.0

    # ----- slots ----------------------------------------------------------------------------

    async def _acquire(self, request_id: str) -> bool:
        """Wait for a slot; False when the request was aborted while it waited."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return True
        turn: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((request_id, turn))
        try:
            return await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled() and turn.result():
                self._release()  # the slot arrived as the caller went away: pass it on
            else:
                self._drop_waiting(request_id)
            raise

    def _release(self) -> None:
        while self._waiting:
            _, turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(True)
                return
        self._free += 1

    def _drop_waiting(self, request_id: str) -> bool:
        for entry in list(self._waiting):
            if entry[0] == request_id:
                self._waiting.remove(entry)
                if not entry[1].done():
                    entry[1].set_result(False)
                return True
        return False

    # ----- the Worker protocol --------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> Completion:
        return await collect_stream(self.stream(request))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        rid = request.request_id
        if not await self._acquire(rid):
            yield StreamDelta(text="", completion=aborted_completion(request, self.worker_id))
            return
        self._tick()
        self._running.add(rid)
        try:
            async for delta in self.inner.stream(request):
                yield delta
        finally:
            self._tick()
            self._running.discard(rid)
            self._release()

    async def abort(self, request_id: str) -> bool:
        if self._drop_waiting(request_id):
            return True
        return await self.inner.abort(request_id)

    async def close(self) -> None:
        """Nothing to release: the gate does not own its worker."""
