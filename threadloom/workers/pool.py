"""LocalPool: routes requests to in-process workers with bounded concurrency."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from threadloom.errors import ConfigError, WorkerDead, WorkerUnavailable
from threadloom.types import Completion, GenerationRequest, TokenUsage, Usage
from threadloom.workers.base import StreamDelta, Worker, WorkerCapabilities, collect_stream

logger = logging.getLogger(__name__)


@dataclass
class _Lane:
    worker: Worker
    limit: asyncio.Semaphore
    capacity: int
    in_flight: int = 0
    affinity: set[str] = field(default_factory=set)


class LocalPool:
    """Spreads requests over workers in this process; a pool is itself a Worker.

    Routing: a request with an `affinity_key` goes to the worker that served that key before
    (its prefix is cached there) unless that worker is full; otherwise to the least-loaded
    worker. A worker that is unavailable or dead gets the request retried on another one.

    Args:
        workers: One worker or several.
        max_concurrency: In-flight requests per worker; defaults to each worker's batch size.
    """

    worker_id = "local-pool"

    def __init__(self, workers: Worker | Sequence[Worker], *, max_concurrency: int | None = None):
        members = [workers] if not isinstance(workers, Sequence) else list(workers)
        if not members:
            raise ConfigError("a LocalPool needs at least one worker")
        if max_concurrency is not None and max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self._lanes: list[_Lane] = []
        for worker in members:
            capacity = max_concurrency or max(1, worker.capabilities.max_batch)
            self._lanes.append(_Lane(worker, asyncio.Semaphore(capacity), capacity))
        self._owner: dict[str, _Lane] = {}
        self._aborted: set[str] = set()
        self.usage = Usage()
        """Aggregate usage of every request this pool served."""

    @property
    def workers(self) -> list[Worker]:
        return [lane.worker for lane in self._lanes]

    @property
    def capabilities(self) -> WorkerCapabilities:
        caps = [lane.worker.capabilities for lane in self._lanes]
        return WorkerCapabilities(
            logprobs=all(c.logprobs for c in caps),
            prefix_caching=all(c.prefix_caching for c in caps),
            speculative_decoding=any(c.speculative_decoding for c in caps),
            max_context=min(c.max_context for c in caps),
            max_batch=sum(lane.capacity for lane in self._lanes),
            model=", ".join(sorted({c.model for c in caps})),
        )

    def _route(self, request: GenerationRequest, exclude: set[int]) -> _Lane:
        candidates = [lane for i, lane in enumerate(self._lanes) if i not in exclude]
        if not candidates:
            raise WorkerUnavailable("no live worker left in the pool")
        key = request.affinity_key
        if key is not None:
            for lane in candidates:
                if key in lane.affinity and lane.in_flight < lane.capacity:
                    return lane
        lane = min(candidates, key=lambda x: x.in_flight / x.capacity)
        if key is not None:
            lane.affinity.add(key)
        return lane

    async def generate(self, request: GenerationRequest) -> Completion:
        return await collect_stream(self.stream(request))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        tried: set[int] = set()
        while True:
            lane = self._route(request, tried)
            index = self._lanes.index(lane)
            lane.in_flight += 1
            self._owner[request.request_id] = lane
            started = False
            try:
                async with lane.limit:
                    if request.request_id in self._aborted:
                        self._aborted.discard(request.request_id)
                        yield StreamDelta(text="", completion=_aborted(request, lane))
                        return
                    async for delta in lane.worker.stream(request):
                        started = True
                        if delta.completion is not None:
                            self.usage.add_completion(delta.completion)
                        yield delta
                return
            except (WorkerUnavailable, WorkerDead) as exc:
                if started or len(tried) + 1 >= len(self._lanes):
                    raise
                logger.warning("worker %s failed (%s); retrying elsewhere", lane.worker, exc)
                tried.add(index)
            finally:
                lane.in_flight -= 1
                self._owner.pop(request.request_id, None)

    async def abort(self, request_id: str) -> bool:
        lane = self._owner.get(request_id)
        if lane is None:
            return False
        if await lane.worker.abort(request_id):
            return True
        # still waiting for a concurrency slot: answer "abort" as soon as it gets one
        self._aborted.add(request_id)
        return True

    async def close(self) -> None:
        await asyncio.gather(*(lane.worker.close() for lane in self._lanes))


def _aborted(request: GenerationRequest, lane: _Lane) -> Completion:
    return Completion(
        text="",
        finish_reason="abort",
        usage=TokenUsage(),
        worker_id=lane.worker.worker_id,
        request_id=request.request_id,
    )
