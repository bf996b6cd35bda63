"""The Worker protocol: what every generation backend implements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from threadloom.errors import WorkerError
from threadloom.types import Completion, GenerationRequest


class WorkerCapabilities(BaseModel):
    """What a worker can do; strategies and pools read it, never the concrete class."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    logprobs: bool = False
    prefix_caching: bool = False
    speculative_decoding: bool = False
    max_context: int = 0
    """Tokens per sequence (prompt plus completion); 0 when unknown."""
    max_batch: int = 1
    """Sequences decoded together in one forward pass."""
    continues_prefix: bool = True
    """A chat request's assistant `prefix` is continued where it ends (False: the backend may
    answer in a new turn instead, so a pool restarts a failed request rather than resume it)."""
    model: str = ""


class StreamDelta(BaseModel):
    """One piece of a streamed completion; the last one carries the full Completion."""

    model_config = ConfigDict(frozen=True)

    text: str
    tokens: int | None = Field(None, ge=0)
    """Tokens decoded since the previous delta (None: the worker does not count them)."""
    completion: Completion | None = None


@runtime_checkable
class Worker(Protocol):
    """A generation backend.

    Implementations: `LlamaCppWorker` (embedded default), `VLLMWorker`, `OpenAIWorker`, and the
    test double `FakeWorker`, all built on `threadloom.workers.core.BaseWorker` (which also makes
    them async context managers). Pools implement the same protocol over several workers.

    Optional abilities are declared as their own protocols, checked with `isinstance`:
    `SupportsStats`, `SupportsEncode`, `HasModelFile`.
    """

    worker_id: str

    @property
    def capabilities(self) -> WorkerCapabilities: ...

    async def generate(self, request: GenerationRequest) -> Completion:
        """Generate one completion; an aborted request returns finish_reason "abort"."""
        ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        """Yield text deltas as they are decoded; the final delta carries the Completion."""
        ...

    async def abort(self, request_id: str) -> bool:
        """Stop a running request within a step; True if it was running."""
        ...

    async def close(self) -> None:
        """Release the backend's resources; later calls raise WorkerDead."""
        ...


@runtime_checkable
class SupportsStats(Protocol):
    """A worker that reports its counters."""

    def stats(self) -> dict[str, Any]:
        """Counters as plain data (JSON-ready). Always holds a "speculation" entry: a dict of
        the speculative-decoding mode and draft counters, empty when the worker never drafts."""
        ...


@runtime_checkable
class SupportsEncode(Protocol):
    """A worker hosting a pooling model (a process reward model) instead of a generator."""

    async def encode(self, prompt: str | list[int], *, task: str = "token_classify") -> Any:
        """Pool one prompt; the pooler's output as nested lists."""
        ...


@runtime_checkable
class HasModelFile(Protocol):
    """A worker whose model is one local file (a GGUF), so the file identifies the model."""

    model_path: Path


async def collect_stream(stream: AsyncIterator[StreamDelta]) -> Completion:
    """Drain a stream and return its final Completion.

    Raises:
        WorkerError: the stream ended without a final Completion (a broken backend).
    """
    final: Completion | None = None
    async for delta in stream:
        if delta.completion is not None:
            final = delta.completion
    if final is None:
        raise WorkerError(
            "the worker's stream ended without a final completion; the backend is broken "
            "(every stream must end with a delta that carries its Completion)"
        )
    return final
