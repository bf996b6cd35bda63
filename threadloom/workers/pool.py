"""Pool: spreads requests over member workers, routes them and fails over between them.

One Pool serves every case: in-process workers (`LocalPool` is its old name) and Ray actors
(`RayPool` presents each actor as a member and leaves routing and failover to a Pool).

Routing is the `Router`'s: least-loaded by in-flight tokens, with prefix affinity; a member
takes at most its capacity (its batch size, or `max_concurrency`), and when every member is
full requests wait here (backpressure).

Failover: when a member fails a request with `WorkerUnavailable` or `WorkerDead`, the request
moves to another member (at most `failover.max_attempts` in all, with a pause that doubles
from `failover.backoff_s`). A request that had already streamed text resumes from it: the next
member continues the prefix plus that text with the tokens left of `max_tokens`, so the
consumer's deltas stay one stream and its tokens are counted once (see `Progress`). A member
that cannot continue a chat prefix (`capabilities.continues_prefix` false) starts the request
over instead: the deltas then start over, and the Completion holds the new attempt's text.
A member that raised `WorkerDead` leaves routing; one that can come back (`SupportsRevival`,
e.g. an actor Ray restarts) is routed to again once it has. The Completion records the
attempts (`attempts`, `failed_workers`), which the run context writes into the trace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from threadloom.errors import ConfigError, WorkerDead, WorkerUnavailable
from threadloom.types import GenerationRequest, Usage
from threadloom.workers.base import StreamDelta, Worker, WorkerCapabilities
from threadloom.workers.core import BaseWorker
from threadloom.workers.routing import Router
from threadloom.workers.wrappers.progress import Progress, can_continue
from threadloom.workers.wrappers.signals import Aborts, Changes, Closing

logger = logging.getLogger(__name__)

__all__ = ["Failover", "LocalPool", "Member", "Pool", "SupportsRevival"]

State = Literal["ready", "suspect", "draining", "dead"]


class Failover(BaseModel):
    """What a pool does when a member fails a request."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(3, ge=1)
    """Members one request may be tried on (the first included)."""
    backoff_s: float = Field(0.05, ge=0)
    """First pause before trying the next member; doubles per failure, capped at 2 s."""
    ready_timeout_s: float = Field(60.0, gt=0)
    """How long to wait for a failed member to come back when no other is live."""


@runtime_checkable
class SupportsRevival(Protocol):
    """A member that may come back after it failed (an actor its cluster restarts)."""

    async def revive(self) -> bool:
        """Wait until the member serves again; False when it will not come back."""
        ...


@dataclass(eq=False)
class Member:
    """One worker of a pool and the load the pool routed to it."""

    worker: Worker
    capacity: int
    """Requests in flight at most."""
    in_flight: int = 0
    tokens: int = 0
    """max_tokens of the requests routed here and not finished (the load estimate)."""
    state: State = "ready"
    """ready; suspect (failed, may come back); draining (being removed); dead."""
    reviving: asyncio.Task[None] | None = field(default=None, repr=False)


class Pool(BaseWorker):
    """Several workers behind one Worker: routing, backpressure, failover and abort.

    Args:
        members: One worker or several (more can join with `add`).
        router: Routing policy (default: least-loaded with prefix affinity).
        failover: Failover policy, as a Failover or its fields.
        max_concurrency: In-flight requests per member; defaults to each member's batch size.
        worker_id: The pool's name in completions it answers itself (e.g. aborted while queued).

    Raises:
        ConfigError: An invalid failover policy or max_concurrency.
    """

    def __init__(
        self,
        members: Worker | Sequence[Worker] = (),
        *,
        router: Router | None = None,
        failover: Failover | Mapping[str, Any] | None = None,
        max_concurrency: int | None = None,
        worker_id: str = "local-pool",
    ) -> None:
        if max_concurrency is not None and max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be at least 1, got {max_concurrency}")
        try:
            self.failover = (
                failover if isinstance(failover, Failover) else Failover(**(failover or {}))
            )
        except ValidationError as exc:
            raise ConfigError(f"invalid failover policy: {exc}") from None
        self.worker_id = worker_id
        self.router = router or Router()
        self.max_concurrency = max_concurrency
        self.members: list[Member] = []
        """Every member and its routed load, in the order they joined."""
        self._holders: dict[str, Member] = {}
        self._aborts = Aborts()
        self._changes = Changes()
        self.usage = Usage()
        """Aggregate usage of every request this pool served."""
        self.failovers = 0
        """Attempts that failed on one member and moved on."""
        for worker in list(members) if isinstance(members, Sequence) else [members]:
            self.add(worker)

    # ----- membership -----------------------------------------------------------------------

    @property
    def workers(self) -> list[Worker]:
        """The member workers, in the order they joined."""
        return [member.worker for member in self.members]

    def add(self, worker: Worker, capacity: int | None = None) -> Member:
        """Add a member (routed to at once); a worker already in the pool is returned as is."""
        for member in self.members:
            if member.worker is worker:
                return member
        if capacity is None:
            capacity = self.max_concurrency or max(1, worker.capabilities.max_batch)
        member = Member(worker, capacity)
        self.members.append(member)
        self._changes.notify()
        return member

    def member(self, worker: Worker) -> Member | None:
        """The member record of a worker (its state and routed load)."""
        return next((m for m in self.members if m.worker is worker), None)

    async def remove(self, worker: Worker, *, close: bool = True) -> None:
        """Stop routing to a member, wait for its requests to finish, then drop (and close) it."""
        member = self.member(worker)
        if member is None:
            return
        member.state = "draining"
        self.router.forget(member)
        while member.in_flight:
            await self._changes.wait(None)
        self.members.remove(member)
        if close:
            await worker.close()

    def holder(self, request_id: str) -> Worker | None:
        """The member serving a request now (None: waiting, between attempts, or unknown)."""
        member = self._holders.get(request_id)
        return None if member is None else member.worker

    @property
    def capabilities(self) -> WorkerCapabilities:
        members = [m for m in self.members if m.state != "dead"]
        caps = [m.worker.capabilities for m in members]
        if not caps:
            return WorkerCapabilities()
        return WorkerCapabilities(
            logprobs=all(c.logprobs for c in caps),
            prefix_caching=all(c.prefix_caching for c in caps),
            continues_prefix=all(c.continues_prefix for c in caps),
            speculative_decoding=any(c.speculative_decoding for c in caps),
            max_context=min(c.max_context for c in caps),
            max_batch=sum(m.capacity for m in members),
            model=", ".join(sorted({c.model for c in caps})),
        )

    # ----- the Worker protocol --------------------------------------------------------------

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        self.check_open()
        rid = request.request_id
        progress = Progress(request)
        avoid: list[Member] = []
        self._aborts.open(rid)
        try:
            while progress.result is None:
                member, reserved = await self._acquire(progress, avoid)
                if member is None:
                    progress.end_here("abort", self.worker_id)
                    break
                try:
                    worker = member.worker
                    # after a failover: continue the text so far, or start over
                    resume = not progress.texts or can_continue(request, worker.capabilities)
                    if progress.texts and resume and progress.left <= 0:
                        progress.end_here("length", progress.failed[-1])
                        break
                    attempt = progress.next_request(resume=resume)
                    self._holders[rid] = member
                    async with Closing(worker.stream(attempt)) as deltas:
                        async for delta in deltas:
                            if self._aborts.unconfirmed(rid):  # it reached the worker too early
                                self._aborts.confirm(rid, await worker.abort(rid))
                            if not progress.book(delta):
                                break
                            yield delta
                    if progress.result is None:
                        raise progress.broken(worker)
                except (WorkerUnavailable, WorkerDead) as exc:
                    self._failed(progress, member, exc)
                    avoid.append(member)
                finally:
                    self._holders.pop(rid, None)
                    self._release(member, reserved)
                if progress.result is None and await self._pause_before_retry(
                    rid, len(progress.failed)
                ):
                    progress.end_here("abort", self.worker_id)
            final = progress.result
            assert final is not None  # the loop ends only with one
            self.usage.add_completion(final)
            yield StreamDelta(text="", completion=final)
        finally:
            self._aborts.close(rid)

    async def abort(self, request_id: str) -> bool:
        if not self._aborts.tracks(request_id):
            return False
        # remembered whatever happens next: waiting for a slot, between attempts, or with its
        # member not knowing it yet (sent again with the member's next delta)
        self._aborts.ask(request_id)
        self._changes.notify()
        member = self._holders.get(request_id)
        if member is not None:
            self._aborts.confirm(request_id, await member.worker.abort(request_id))
        return True

    async def _shutdown(self) -> None:
        self._changes.notify()
        for member in self.members:
            if member.reviving is not None:
                member.reviving.cancel()
        await asyncio.gather(*(member.worker.close() for member in self.members))

    # ----- routing and failover -------------------------------------------------------------

    async def _acquire(self, progress: Progress, avoid: list[Member]) -> tuple[Member | None, int]:
        """A member with room for the request, waiting while all are full (backpressure).

        Members in `avoid` (where this request failed) are used only if no other has room.
        Returns (None, 0) when the request is aborted while waiting.

        Raises:
            WorkerUnavailable: No member is live, or none came back within ready_timeout_s.
        """
        request = progress.request
        reserve = max(1, progress.left)
        while True:
            if self._aborts.asked(request.request_id):
                return None, 0
            self._check_running(request.request_id)
            ready = [m for m in self.members if m.state == "ready"]
            fresh = [m for m in ready if m not in avoid]
            member = self.router.choose(fresh, request.affinity_key, reserve) if fresh else None
            member = member or self.router.choose(ready, request.affinity_key, reserve)
            if member is not None:
                member.in_flight += 1
                member.tokens += reserve
                return member, reserve
            if not any(m.state in ("ready", "suspect") for m in self.members):
                raise WorkerUnavailable(
                    f"no live worker in pool {self.worker_id!r}: every member is dead or gone "
                    f"({len(self.members)} known). Check the workers' logs, then add or scale "
                    "members again"
                )
            timeout = None if ready else self.failover.ready_timeout_s
            if not await self._changes.wait(timeout):
                raise WorkerUnavailable(
                    f"no member of pool {self.worker_id!r} came back within "
                    f"{self.failover.ready_timeout_s:g} s; check why they failed"
                )

    def _release(self, member: Member, reserved: int) -> None:
        member.in_flight -= 1
        member.tokens -= reserved
        self._changes.notify()

    def _check_running(self, request_id: str) -> None:
        if self.closed:
            raise WorkerDead(
                f"pool {self.worker_id!r} was closed while request {request_id} ran"
            ) from None

    def _failed(self, progress: Progress, member: Member, error: BaseException) -> None:
        """Book a failed attempt; raise when the request may not go on."""
        rid = progress.request.request_id
        self._check_running(rid)
        name = member.worker.worker_id
        progress.failed.append(name)
        self.failovers += 1
        if isinstance(error, WorkerDead):
            self._suspect(member)
        if len(progress.failed) >= self.failover.max_attempts:
            raise WorkerUnavailable(
                f"request {rid} failed on {len(progress.failed)} workers "
                f"({', '.join(progress.failed)}); last error: {error}. Check the pool's workers "
                "(`threadloom workers`) and their logs"
            ) from error
        logger.warning("request %s failed on %s (%s); trying another worker", rid, name, error)

    async def _pause_before_retry(self, request_id: str, failures: int) -> bool:
        """The backoff before the next attempt; True when the request was aborted meanwhile."""
        pause = min(self.failover.backoff_s * 2 ** (failures - 1), 2.0)
        return await self._changes.pause(pause, lambda: self._aborts.asked(request_id))

    def _suspect(self, member: Member) -> None:
        """Take a failed member out of routing; follow it back if it can come back."""
        if member.state != "ready":
            return
        self.router.forget(member)
        worker = member.worker
        if not isinstance(worker, SupportsRevival):
            member.state = "dead"
            logger.error("worker %s of pool %s is dead; going on without it",
                         worker.worker_id, self.worker_id)  # fmt: skip
            return
        member.state = "suspect"

        async def follow() -> None:
            back = await worker.revive()
            if member.state == "suspect":
                member.state = "ready" if back else "dead"
                if back:
                    logger.info("worker %s is back", worker.worker_id)
                else:
                    logger.error("worker %s of pool %s is dead; going on without it",
                                 worker.worker_id, self.worker_id)  # fmt: skip
            self._changes.notify()

        member.reviving = asyncio.create_task(follow())


LocalPool = Pool
"""The name a pool of in-process workers had before `Pool` served every case."""
