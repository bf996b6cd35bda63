"""BaseWorker: what every backend gets for free once it can stream."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Self

from threadloom.errors import WorkerDead
from threadloom.types import Completion, GenerationRequest
from threadloom.workers.base import StreamDelta, WorkerCapabilities, collect_stream

__all__ = ["BaseWorker"]


class BaseWorker(ABC):
    """A worker's shared half: `generate()` from `stream()`, the closed guard, `async with`.

    Subclasses set `worker_id`, implement `capabilities`, `stream`, `abort` and `_shutdown`
    (release the backend once), and call `check_open()` first in every request path.
    """

    worker_id: str
    _closed: bool = False

    @property
    @abstractmethod
    def capabilities(self) -> WorkerCapabilities: ...

    @abstractmethod
    def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        """Yield text deltas as they are decoded; the final delta carries the Completion."""

    @abstractmethod
    async def abort(self, request_id: str) -> bool:
        """Stop a running request within a step; True if it was running."""

    async def generate(self, request: GenerationRequest) -> Completion:
        """Generate one completion; an aborted request returns finish_reason "abort"."""
        return await collect_stream(self.stream(request))

    @property
    def closed(self) -> bool:
        """Whether `close()` was called; requests then raise WorkerDead."""
        return self._closed

    def check_open(self) -> None:
        """Raise WorkerDead once the worker is closed."""
        if self._closed:
            raise WorkerDead(f"worker {self.worker_id} is closed; create a new one")

    async def close(self) -> None:
        """Release the backend's resources once; later requests raise WorkerDead."""
        if self._closed:
            return
        self._closed = True
        await self._shutdown()

    async def _shutdown(self) -> None:  # noqa: B027 - a backend with nothing to release
        """Release what the backend holds (called once, by `close`)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
