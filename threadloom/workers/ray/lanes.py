"""Lane: one Ray actor presented as a Worker, the transport under a RayPool.

A lane opens a request on its actor (`WorkerHost.open`), then polls all of its running
requests together, one round trip at a time, and hands each request its chunks. Ray's errors
become the worker errors a `Pool` acts on, through one table (`_translate`): an actor that died
or stopped answering is `WorkerDead` (the pool takes the lane out of routing and follows it
with `revive` until Ray has restarted it), a worker that reports itself unavailable stays
`WorkerUnavailable`, and anything else the worker raised reaches the caller as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from threadloom.errors import MissingDependencyError, ThreadloomError, WorkerDead, WorkerError
from threadloom.types import GenerationRequest
from threadloom.workers.base import StreamDelta, WorkerCapabilities
from threadloom.workers.core import BaseWorker
from threadloom.workers.ray.actor import Chunk
from threadloom.workers.ray.cluster import kill_actor
from threadloom.workers.ray.config import FailoverSpec

try:
    from ray.exceptions import ActorUnavailableError, RayActorError, RayError, RayTaskError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError.for_extra("ray", "ray", "RayPool") from exc

logger = logging.getLogger(__name__)

__all__ = ["Lane", "first_line"]


class Lane(BaseWorker):
    """One actor of a pool as a Worker; its name is the actor's.

    Args:
        name: The actor's name.
        actor: Its handle.
        group: Its placement group, if any.
        pool: The pool's name (for messages).
        failover: Timeouts of calls to the actor and of its restarts.
    """

    def __init__(
        self, name: str, actor: Any, group: Any, *, pool: str, failover: FailoverSpec
    ) -> None:
        self.worker_id = name
        self.actor = actor
        self.group = group
        self.pool = pool
        self.failover = failover
        self.info: dict[str, Any] = {}
        """What the actor said of itself when it (re)started."""
        self.startup: asyncio.Task[dict[str, Any]] | None = None
        self._inboxes: dict[str, asyncio.Queue[Any]] = {}
        """Running requests polled together, each with the queue its chunks go to."""
        self._poller: asyncio.Task[None] | None = None

    @property
    def capabilities(self) -> WorkerCapabilities:
        return WorkerCapabilities(**self.info.get("capabilities", {}))

    async def describe(self, timeout_s: float) -> dict[str, Any]:
        """What the actor says of itself: node, resources, model, load (plain data)."""
        info: dict[str, Any] = await asyncio.wait_for(self.actor.describe.remote(), timeout_s)
        return info

    # ----- the Worker protocol --------------------------------------------------------------

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        self.check_open()
        rid = request.request_id
        wait_s, linger_s = self.failover.poll_wait_s, self.failover.linger_s
        ended = False  # the actor is done with the request, or gone; else it is told to stop
        try:
            try:
                call = self.actor.open.remote(request, wait_s, linger_s)
                item = await asyncio.wait_for(call, wait_s + self.failover.call_timeout_s)
            except (RayError, TimeoutError) as exc:
                item = exc
            inbox: asyncio.Queue[Any] | None = None
            while True:
                if isinstance(item, BaseException):
                    ended = isinstance(item, RayActorError)
                    raise self._translate(item, rid) from None
                chunk: Chunk = item
                for text, tokens in zip(chunk.texts, chunk.tokens, strict=True):
                    yield StreamDelta(text=text, tokens=tokens)
                if chunk.completion is not None:
                    ended = True
                    yield StreamDelta(text="", completion=chunk.completion)
                    return
                if inbox is None:
                    inbox = self._subscribe(rid)
                item = await inbox.get()
        finally:
            self._inboxes.pop(rid, None)
            if not ended and not self.closed:  # it failed or its consumer left: stop it there
                self.actor.release.remote(rid)

    async def abort(self, request_id: str) -> bool:
        with contextlib.suppress(RayError, TimeoutError):
            call = self.actor.abort.remote(request_id)
            return bool(await asyncio.wait_for(call, self.failover.call_timeout_s))
        return False

    async def _shutdown(self) -> None:
        """Close the worker, kill the actor; requests still running end with WorkerDead."""
        if self._poller is not None:
            self._poller.cancel()
        stopped = WorkerDead(f"actor {self.worker_id} of pool {self.pool!r} was stopped")
        for inbox in self._inboxes.values():
            inbox.put_nowait(stopped)
        self._inboxes.clear()
        with contextlib.suppress(RayError, TimeoutError):
            await asyncio.wait_for(self.actor.close.remote(), 5.0)
        self.kill()

    def kill(self) -> None:
        """Kill the actor now, without closing its worker."""
        self._closed = True
        kill_actor(self.actor, self.group)

    async def revive(self) -> bool:
        """Wait until Ray has restarted the actor (True), or it is out of restarts (False)."""
        deadline = time.monotonic() + self.failover.ready_timeout_s
        while time.monotonic() < deadline and not self.closed:
            try:
                self.info = await self.describe(5.0)
            except (ActorUnavailableError, TimeoutError):
                await asyncio.sleep(0.2)  # being restarted
                continue
            except RayActorError:
                return False  # out of restarts
            return True
        return False

    # ----- errors and polling ---------------------------------------------------------------

    def _translate(self, error: BaseException, request_id: str) -> ThreadloomError:
        """The worker error a pool acts on, for what a call to the actor raised."""
        if isinstance(error, RayTaskError) and error.cause is not None:
            error = error.cause
        if isinstance(error, ThreadloomError):
            return error
        if isinstance(error, RayActorError):
            return WorkerDead(f"actor {self.worker_id} died: {first_line(error)}")
        if isinstance(error, TimeoutError):
            return WorkerDead(
                f"actor {self.worker_id} gave no answer within {self.failover.call_timeout_s:g} s"
            )
        return WorkerError(f"{self.worker_id} failed on {request_id}: {first_line(error)}")

    def _subscribe(self, request_id: str) -> asyncio.Queue[Any]:
        """Have a running request polled with the lane's others; its chunks (or the error that
        ended it) arrive on the returned queue."""
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._inboxes[request_id] = inbox
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())
        return inbox

    async def _poll(self) -> None:
        """One round trip at a time for all of the lane's running requests, while there are any."""
        failover = self.failover
        limit = failover.poll_wait_s + failover.call_timeout_s
        while self._inboxes:
            ids = list(self._inboxes)
            call = self.actor.poll.remote(ids, failover.poll_wait_s, failover.linger_s)
            try:
                news = await asyncio.wait_for(call, limit)
            except (RayError, TimeoutError) as exc:
                # the actor died or stopped answering: every request on it fails over
                for waiting in self._inboxes.values():
                    waiting.put_nowait(exc)
                self._inboxes.clear()
                return
            for request_id, item in news.items():
                inbox = self._inboxes.get(request_id)
                if inbox is None:
                    continue  # its consumer went away meanwhile
                inbox.put_nowait(item)
                if isinstance(item, BaseException) or item.completion is not None:
                    del self._inboxes[request_id]

    def __repr__(self) -> str:
        return f"Lane({self.worker_id!r})"


def first_line(exc: BaseException) -> str:
    """The informative line of an error (Ray puts the remote cause on the last line)."""
    text = str(exc).strip() or type(exc).__name__
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines[-1] if isinstance(exc, RayError) and lines else lines[0])[:300]
