"""What a layer in front of a worker needs to follow its requests: aborts and wake-ups.

A wrapper or pool sees a request before its worker does and keeps it while it waits (for a
slot, for a retry's pause, between failover attempts). An abort that arrives then must end the
request at once, and an abort that reaches the worker before the worker knew the request must
be sent again once it does. `Aborts` keeps that book; `relay` streams from a worker and resends
an unconfirmed abort with each delta; `Changes` wakes waiters when something changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from types import AsyncGeneratorType

from threadloom.types import GenerationRequest
from threadloom.workers.base import StreamDelta, Worker

__all__ = ["Aborts", "Changes", "Closing", "relay"]


class Aborts:
    """The requests a layer is serving, and whether an abort was asked for and confirmed."""

    def __init__(self) -> None:
        self._state: dict[str, bool | None] = {}
        """Request id -> None (no abort asked), False (asked, not confirmed), True (confirmed)."""

    def open(self, request_id: str) -> None:
        self._state[request_id] = None

    def close(self, request_id: str) -> None:
        self._state.pop(request_id, None)

    def tracks(self, request_id: str) -> bool:
        return request_id in self._state

    def ask(self, request_id: str) -> None:
        if request_id in self._state and self._state[request_id] is None:
            self._state[request_id] = False

    def asked(self, request_id: str) -> bool:
        return self._state.get(request_id) is not None

    def confirm(self, request_id: str, confirmed: bool) -> None:
        """Record the worker's answer to an abort (True: it was running there and stops)."""
        if request_id in self._state and self._state[request_id] is not True:
            self._state[request_id] = confirmed

    def unconfirmed(self, request_id: str) -> bool:
        return self._state.get(request_id) is False


class Changes:
    """Wakes every waiter at once when something changed (a slot freed, an abort arrived)."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self, timeout: float | None) -> bool:
        """Wait for the next change; False when `timeout` seconds passed without one."""
        if self._event is None:
            self._event = asyncio.Event()
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def pause(self, seconds: float, stop: Callable[[], bool]) -> bool:
        """Sleep `seconds`, waking at each change; True as soon as `stop()` holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not stop():
            left = deadline - loop.time()
            if left <= 0:
                return False
            await self.wait(left)
        return True


class Closing:
    """Close a worker's stream when the block ends, so a consumer that leaves early stops the
    request on the worker now rather than when the generator is collected. (A class: cheaper
    per request than a generator-based context manager, and pools use it on every one.)"""

    __slots__ = ("stream",)

    def __init__(self, stream: AsyncIterator[StreamDelta]) -> None:
        self.stream = stream

    async def __aenter__(self) -> AsyncIterator[StreamDelta]:
        return self.stream

    async def __aexit__(self, *exc_info: object) -> None:
        stream = self.stream
        if isinstance(stream, (AsyncGeneratorType, AsyncGenerator)):  # the concrete type first
            await stream.aclose()


async def relay(
    worker: Worker, request: GenerationRequest, aborts: Aborts
) -> AsyncIterator[StreamDelta]:
    """A worker's stream of one request; an abort the worker did not confirm (it did not know
    the request yet) is sent again with each delta until it does."""
    rid = request.request_id
    async with Closing(worker.stream(request)) as deltas:
        async for delta in deltas:
            if aborts.unconfirmed(rid):
                aborts.confirm(rid, await worker.abort(rid))
            yield delta
