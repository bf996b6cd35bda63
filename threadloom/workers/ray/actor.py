"""WorkerHost: the body of a Ray actor that holds one Worker and serves it to a RayPool.

Streaming across the actor boundary works by polling in chunks. `open` starts a request in a
task that drains the worker's stream into a per-request feed, and answers with the first
chunk (a short reply comes back whole in that one round trip). After that the pool polls
all of an actor's running requests with one `poll` call: it waits until any of them has news
(an empty answer is a heartbeat) and returns every delta decoded since the last call. A
batched engine decodes a token for each sequence per step, so one round trip per step serves
them all, however many requests are running. `abort` stops a request on the worker (its feed
then ends with finish_reason "abort"); `release` also forgets its feed. Each chunk carries the
token count of each delta, as the worker reported it (None where it does not count), so a pool
can resume a request within its `max_tokens` on another actor. An abort that arrives before its
request is opened is remembered, and the request is stopped as soon as it opens.

The class is plain Python; `RayPool` wraps it with `ray.remote` and the actor's resources.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from threadloom.errors import WorkerUnavailable
from threadloom.types import Completion, GenerationRequest
from threadloom.workers.base import SupportsStats, Worker

logger = logging.getLogger(__name__)

__all__ = ["Chunk", "WorkerHost"]

_EARLY_ABORTS = 1024
"""Aborts of requests not opened yet that an actor remembers (the oldest are forgotten)."""


class Chunk(NamedTuple):
    """What one round trip hands over of a request."""

    texts: list[str]
    """Text deltas in order."""
    tokens: list[int | None]
    """Tokens each delta took, as the worker counted them (None: it does not count)."""
    completion: Completion | None
    """The final Completion, once the request is done."""


@dataclass
class _Feed:
    request: GenerationRequest
    texts: list[str] = field(default_factory=list)
    tokens: list[int | None] = field(default_factory=list)
    completion: Completion | None = None
    error: BaseException | None = None
    abort: bool = False
    """Abort was asked for; `aborted` once the worker confirmed it."""
    aborted: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def done(self) -> bool:
        return self.completion is not None or self.error is not None


class WorkerHost:
    """Holds one worker inside a Ray actor; see the module docstring for the protocol.

    Args:
        spec: Worker spec for `make_worker` (e.g. "llamacpp", "fake:42").
        options: Keyword arguments for the worker's constructor.
        worker_id: The worker's name (the actor's name too).
        pool: Name of the pool the actor belongs to.
        factory: Instead of `spec`, a function building the worker (pickled by Ray).
    """

    def __init__(
        self,
        spec: str,
        options: dict[str, Any],
        worker_id: str,
        pool: str,
        factory: Callable[[], Worker] | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.pool = pool
        self.spec = spec if factory is None else "custom"
        if factory is not None:
            self._worker = factory()
            with contextlib.suppress(AttributeError):
                self._worker.worker_id = worker_id
        else:
            from threadloom.workers.registry import make_worker

            self._worker = make_worker(spec, worker_id=worker_id, **options)
        self._feeds: dict[str, _Feed] = {}
        self._activity = asyncio.Event()
        """Set (and replaced) whenever any request has news."""
        self._early_aborts: dict[str, None] = {}
        """Requests aborted before they were opened here (in arrival order)."""
        self._started = time.time()
        self.served = 0
        self.completion_tokens = 0
        self.drafted_tokens = 0
        self.accepted_tokens = 0

    # ----- streaming ------------------------------------------------------------------------

    async def open(self, request: GenerationRequest, wait_s: float, linger_s: float = 0.0) -> Chunk:
        """Start a request and return its first chunk (waiting up to `wait_s` for it; then up
        to `linger_s` for the request to finish, so a short reply takes one round trip)."""
        rid = request.request_id
        old = self._feeds.pop(rid, None)
        if old is not None and not old.done:
            await self._worker.abort(rid)
        feed = _Feed(request)
        if rid in self._early_aborts:
            del self._early_aborts[rid]
            feed.abort = True  # aborted before it arrived: it ends at once
        self._feeds[rid] = feed
        feed.task = asyncio.create_task(self._produce(feed))
        if not feed.texts and not feed.done:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(feed.wake.wait(), wait_s)
        if feed.texts and not feed.done and linger_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(feed.finished.wait(), linger_s)
        chunk = self._take(rid)
        if isinstance(chunk, BaseException):
            raise chunk
        return chunk

    async def poll(
        self, request_ids: list[str], wait_s: float, linger_s: float = 0.0
    ) -> dict[str, Chunk | BaseException]:
        """New deltas of several requests in one round trip.

        Waits up to `wait_s` until one of them has news (an empty answer is a heartbeat), then
        `linger_s` more so that the other sequences of the same batched step come along.
        A request's entry is its chunk, or the error that ended it (a request unknown here,
        because the actor restarted and lost it, gets WorkerUnavailable).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            activity = self._activity  # taken before the check, so no news is missed
            if any(self._has_news(rid) for rid in request_ids):
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                return {}
            try:
                await asyncio.wait_for(activity.wait(), remaining)
            except TimeoutError:
                return {}
        if linger_s > 0:
            await asyncio.sleep(linger_s)
        return {rid: self._take(rid) for rid in request_ids if self._has_news(rid)}

    def _has_news(self, request_id: str) -> bool:
        feed = self._feeds.get(request_id)
        return feed is None or bool(feed.texts) or feed.done

    def _take(self, request_id: str) -> Chunk | BaseException:
        """Hand over a request's new deltas (and its end, once it ended)."""
        feed = self._feeds.get(request_id)
        if feed is None:
            return WorkerUnavailable(
                f"request {request_id} is unknown on {self.worker_id} (the actor restarted); "
                "the pool retries it on another worker"
            )
        feed.wake.clear()
        texts, feed.texts = feed.texts, []
        tokens, feed.tokens = feed.tokens, []
        if not feed.done:
            return Chunk(texts, tokens, None)
        if feed.error is not None and texts:
            # hand over what was decoded; the next call reports the error
            return Chunk(texts, tokens, None)
        del self._feeds[request_id]
        if feed.error is not None:
            return feed.error
        return Chunk(texts, tokens, feed.completion)

    async def _produce(self, feed: _Feed) -> None:
        rid = feed.request.request_id
        try:
            if feed.abort:  # aborted before it started
                feed.completion = Completion(
                    text="", finish_reason="abort", worker_id=self.worker_id, request_id=rid
                )
                return
            async for delta in self._worker.stream(feed.request):
                if feed.abort and not feed.aborted:
                    # the abort came before the worker knew the request: ask again
                    feed.aborted = await self._worker.abort(rid)
                if delta.text:
                    feed.texts.append(delta.text)
                    feed.tokens.append(delta.tokens)
                if delta.completion is not None:
                    self._count(delta.completion)
                    feed.completion = delta.completion
                self._wake(feed)
        except Exception as exc:  # handed to the pool, which decides whether to retry
            feed.error = exc
        finally:
            if not feed.done:
                feed.error = WorkerUnavailable(f"{self.worker_id} stopped the request early")
            self._wake(feed)
            feed.finished.set()

    def _wake(self, feed: _Feed) -> None:
        feed.wake.set()
        self._activity.set()
        self._activity = asyncio.Event()

    def _count(self, completion: Completion) -> None:
        self.served += 1
        self.completion_tokens += completion.usage.completion_tokens
        self.drafted_tokens += completion.drafted_tokens
        self.accepted_tokens += completion.accepted_tokens

    async def abort(self, request_id: str) -> bool:
        """Stop a running request; its next chunk ends it with finish_reason "abort"."""
        feed = self._feeds.get(request_id)
        if feed is None:
            self._abort_when_opened(request_id)
            return False
        if feed.done:
            return False
        feed.abort = True
        feed.aborted = await self._worker.abort(request_id)
        return True

    async def release(self, request_id: str) -> None:
        """Abort a request and forget it (its consumer went away)."""
        feed = self._feeds.pop(request_id, None)
        if feed is None:
            self._abort_when_opened(request_id)
        elif not feed.done:
            feed.abort = True
            feed.aborted = await self._worker.abort(request_id)

    def _abort_when_opened(self, request_id: str) -> None:
        """Remember an abort whose request is not open here (its `open` may be on the way)."""
        self._early_aborts[request_id] = None
        while len(self._early_aborts) > _EARLY_ABORTS:
            del self._early_aborts[next(iter(self._early_aborts))]

    # ----- management -----------------------------------------------------------------------

    async def describe(self) -> dict[str, Any]:
        """Where the actor runs, what it holds and how loaded it is (plain data)."""
        import ray

        ctx = ray.get_runtime_context()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            restarted = bool(ctx.was_current_actor_reconstructed)
        caps = self._worker.capabilities
        running = [f for f in self._feeds.values() if not f.done]
        drafted = self.drafted_tokens
        return {
            "worker_id": self.worker_id,
            "pool": self.pool,
            "spec": self.spec,
            "node_id": ctx.get_node_id(),
            "node_ip": ray.util.get_node_ip_address(),
            "pid": os.getpid(),
            "resources": dict(ctx.get_assigned_resources()),
            "placement_group": ctx.get_placement_group_id(),
            "restarted": restarted,
            "uptime_s": round(time.time() - self._started, 1),
            "capabilities": caps.model_dump(),
            "in_flight": len(running),
            "in_flight_tokens": sum(f.request.params.max_tokens for f in running),
            "served": self.served,
            "completion_tokens": self.completion_tokens,
            "speculation": {
                "enabled": caps.speculative_decoding,
                "drafted_tokens": drafted,
                "accepted_tokens": self.accepted_tokens,
                "acceptance": round(self.accepted_tokens / drafted, 3) if drafted else None,
            },
            "stats": self._worker.stats() if isinstance(self._worker, SupportsStats) else {},
        }

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        """Abort what is running and release the worker's resources."""
        for rid in list(self._feeds):
            await self.release(rid)
        await self._worker.close()
