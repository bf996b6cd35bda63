"""Handing a request's outputs from a backend thread to the caller's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import Generic, TypeVar

__all__ = ["ThreadBridge"]

T = TypeVar("T")


class ThreadBridge(Generic[T]):
    """A queue that any thread may fill and one event loop drains.

    Create it on the consuming loop. The producer calls `put` with each item, then with either
    its last item or an exception. If the consuming loop has closed meanwhile, nobody will read
    the request, so `put` calls `abort` instead. `drain` yields the items until the last one and
    calls `abort` when the consumer leaves before it (cancelled, or stopped iterating), so no
    compute is spent on output nobody reads.

    Args:
        abort: Stops the request on the backend; called at most once, from any thread.
        is_last: Whether an item ends the request.
    """

    __slots__ = ("_abort", "_aborted", "_is_last", "_loop", "_queue")

    def __init__(self, abort: Callable[[], object], is_last: Callable[[T], bool]) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[T | BaseException] = asyncio.Queue()
        self._abort = abort
        self._is_last = is_last
        self._aborted = False

    def put(self, item: T | BaseException) -> None:
        """Hand one item (or the exception that ends the request) to the consumer; any thread."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the consumer's loop is closed: nobody reads this request
            self._stop()

    async def drain(self) -> AsyncGenerator[T, None]:
        """The items in order, up to and including the last; raises what the producer raised."""
        finished = False
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = self._is_last(item)
                yield item
                if finished:
                    return
        finally:
            if not finished:
                self._stop()

    def _stop(self) -> None:
        if not self._aborted:
            self._aborted = True
            self._abort()
