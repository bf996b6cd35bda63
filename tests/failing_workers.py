"""Test doubles for failure handling: FakeWorkers that break, die, or cannot continue a prefix."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from threadloom.errors import WorkerDead, WorkerError, WorkerUnavailable
from threadloom.types import GenerationRequest
from threadloom.workers.base import StreamDelta, WorkerCapabilities
from threadloom.workers.fake import FakeWorker

FULL = " ".join(f"w{i}" for i in range(30)) + " answer 42"
"""The text every continuing worker writes: 32 whitespace tokens."""


def continue_full(request: GenerationRequest, _: int) -> str:
    """A script that continues FULL from whatever prefix it is given."""
    return FULL[len(request.prefix) :]


class Breaking(FakeWorker):
    """A FakeWorker that continues FULL and fails as planned.

    Args:
        breaks: For the n-th request, the text deltas after which it fails (None: it does not);
            requests past the list do not fail.
        error: What a planned failure raises.
        **options: FakeWorker options.
    """

    def __init__(
        self,
        *,
        breaks: Sequence[int | None] = (),
        error: type[WorkerError] = WorkerUnavailable,
        **options: Any,
    ) -> None:
        options.setdefault("worker_id", "breaking")
        super().__init__(continue_full, **options)
        self.breaks = list(breaks)
        self.error = error
        self.dead = False
        """Set by `kill`: the request it serves fails at its next token, and so does any new one."""

    def kill(self) -> None:
        """Die mid-stream, as a crashed process would: no completion, WorkerDead."""
        self.dead = True

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        call = len(self.requests)
        plan = self.breaks[call] if call < len(self.breaks) else None
        if self.dead or plan == 0:
            self.requests.append(request)  # received, refused before decoding anything
        if self.dead:
            raise WorkerDead(f"{self.worker_id} died")
        if plan == 0:
            raise self.error(f"{self.worker_id}: connection refused")
        sent = 0
        async with contextlib.aclosing(super().stream(request)) as deltas:
            async for delta in deltas:
                yield delta
                sent += 1 if delta.text else 0
                if self.dead:
                    raise WorkerDead(f"{self.worker_id} died while serving {request.request_id}")
                if plan is not None and sent == plan:
                    raise self.error(f"{self.worker_id}: connection reset")


class Chunky(Breaking):
    """Streams two tokens per delta and says so, to check counts per chunk, not per delta."""

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        pending: list[str] = []
        async for delta in super().stream(request):
            if delta.completion is not None:
                if pending:
                    yield StreamDelta(text="".join(pending), tokens=len(pending))
                yield delta
                return
            pending.append(delta.text)
            if len(pending) == 2:
                yield StreamDelta(text="".join(pending), tokens=2)
                pending = []


class NewTurnWorker(FakeWorker):
    """A worker that answers a prefix in a new turn instead of continuing it."""

    @property
    def capabilities(self) -> WorkerCapabilities:
        return super().capabilities.model_copy(update={"continues_prefix": False})
