"""Wrapper: a Worker around another Worker, the base of retries, limits and resumption."""

from __future__ import annotations

from collections.abc import AsyncIterator

from threadloom.types import GenerationRequest
from threadloom.workers.base import StreamDelta, Worker, WorkerCapabilities
from threadloom.workers.core import BaseWorker
from threadloom.workers.wrappers.signals import Aborts, Changes, relay

__all__ = ["Wrapper"]


class Wrapper(BaseWorker):
    """Passes everything to `inner`; subclasses change how `stream` reaches it.

    It keeps the inner worker's name (traces name the worker that generated), forwards aborts
    (and remembers them, so a request that waits in this layer ends at once) and closes the
    inner worker with itself.

    Args:
        worker: The worker to wrap (any Worker, a pool or another wrapper).
    """

    def __init__(self, worker: Worker) -> None:
        self.inner = worker
        self.worker_id = worker.worker_id
        self._aborts = Aborts()
        self._changes = Changes()

    @property
    def capabilities(self) -> WorkerCapabilities:
        return self.inner.capabilities

    async def abort(self, request_id: str) -> bool:
        if not self._aborts.tracks(request_id):
            return await self.inner.abort(request_id)
        self._aborts.ask(request_id)
        self._changes.notify()
        self._aborts.confirm(request_id, await self.inner.abort(request_id))
        return True

    async def _shutdown(self) -> None:
        await self.inner.close()

    def _relay(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        """The inner worker's stream of `request`, following up on aborts."""
        return relay(self.inner, request, self._aborts)

    async def _pause(self, request_id: str, seconds: float) -> bool:
        """Wait `seconds`; True (at once) when the request is aborted meanwhile."""
        return await self._changes.pause(seconds, lambda: self._aborts.asked(request_id))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"
