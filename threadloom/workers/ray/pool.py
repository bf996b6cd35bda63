"""RayPool: workers in Ray actors, routed by load and prefix affinity, with failover.

Each replica of a pool is a Ray actor (`WorkerHost`) created with the pool's resources; the
pool itself lives in the orchestrator's event loop and is a Worker, so strategies use it like
any other. Streaming works by polling the actor for chunks of deltas (see `ray_actor`).

Failover: when an actor dies, stops answering within `call_timeout_s`, or its worker reports
itself unavailable, the request is retried (tenacity, at most `max_attempts` actors) on a live
actor. A request that had already streamed text resumes from it: the next actor continues the
prefix plus that text with the tokens left of `max_tokens`, so the consumer's deltas stay one
coherent stream and no candidate is lost or produced twice. Tokens are counted as the workers
report them with each delta (a delta whose worker does not count is bounded by its UTF-8 bytes,
so a resumed request never runs past `max_tokens`). A worker that cannot continue a chat prefix
(`capabilities.continues_prefix` false) restarts the request from scratch instead: its deltas
then start over, and the final Completion holds the new attempt's text alone. Ray restarts the
dead actor (`max_restarts`); the pool routes to it again once it answers. The Completion records
the attempts (`attempts`, `failed_workers`), which the run context writes into the trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from pydantic import ValidationError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from threadloom.errors import (
    ConfigError,
    MissingDependencyError,
    ThreadloomError,
    WorkerDead,
    WorkerError,
    WorkerUnavailable,
)
from threadloom.types import Completion, GenerationRequest, Usage
from threadloom.workers.base import StreamDelta, Worker, WorkerCapabilities, collect_stream
from threadloom.workers.ray.actor import Chunk
from threadloom.workers.ray.attempt import Attempt
from threadloom.workers.ray.cluster import check_placement, connect, shutdown
from threadloom.workers.ray.config import (
    FailoverSpec,
    PoolSpec,
    RoutingSpec,
    describe_errors,
)
from threadloom.workers.ray.lanes import Lane, Lanes, first_line

try:
    from ray.exceptions import RayActorError, RayError, RayTaskError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError.for_extra("ray", "ray", "RayPool") from exc

logger = logging.getLogger(__name__)

__all__ = ["RayPool"]


class _Failover(WorkerUnavailable):
    """An attempt failed on one actor; tenacity retries the request on another."""


_NOTHING = Chunk([], [], None)


def _continues_prefix(lane: Lane) -> bool:
    """Whether the lane's worker continues a chat prefix (unknown: assume it does)."""
    return bool(lane.info.get("capabilities", {}).get("continues_prefix", True))


class RayPool:
    """Replicas of one worker, each in a Ray actor; a pool is itself a Worker.

    Routing is least-loaded by in-flight tokens with prefix affinity (see `Router`); when
    every actor is full, requests wait here (backpressure) instead of queueing on actors.

    Args:
        spec: A PoolSpec, or a worker spec such as "llamacpp" or "fake:42".
        name: The pool's name (actors are named '{name}-{index}-{token}').
        replicas: Overrides the spec's replica count.
        routing: Routing policy.
        failover: Failover policy and timeouts.
        address: Ray address to join (None: RAY_ADDRESS, else start a local cluster); ignored
            when Ray is already initialized in this process.
        namespace: Ray namespace of the actors.
        factory: Builds the worker inside each actor instead of the spec's kind (pickled).
        **spec_fields: Overrides of PoolSpec fields (resources, options, max_concurrency...).

    Raises:
        ConfigError: The spec is invalid or can never be placed on this cluster.
    """

    def __init__(
        self,
        spec: PoolSpec | str = "llamacpp",
        *,
        name: str = "generator",
        replicas: int | None = None,
        routing: RoutingSpec | Mapping[str, Any] | None = None,
        failover: FailoverSpec | Mapping[str, Any] | None = None,
        address: str | None = None,
        namespace: str = "threadloom",
        factory: Callable[[], Worker] | None = None,
        **spec_fields: Any,
    ) -> None:
        base = spec.model_dump() if isinstance(spec, PoolSpec) else {"kind": spec}
        if replicas is not None:
            spec_fields["replicas"] = replicas
        try:
            self.spec = PoolSpec.model_validate({**base, **spec_fields})
            routing = RoutingSpec.model_validate(routing or {})
            failover = FailoverSpec.model_validate(failover or {})
        except ValidationError as exc:
            raise ConfigError(f"pool {name!r}: {describe_errors(exc)}") from None
        self.name = name
        self.worker_id = f"ray-pool:{name}"
        self.failover = failover
        self._owns_ray = connect(address, namespace=namespace)
        self._lanes = Lanes(
            self.spec,
            pool=name,
            namespace=namespace,
            routing=routing,
            failover=self.failover,
            factory=factory,
        )
        self._attempts: dict[str, Attempt] = {}
        self._aborted: set[str] = set()
        self._closed = False
        self._retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Failover),
            stop=stop_after_attempt(self.failover.max_attempts),
            wait=wait_exponential(multiplier=self.failover.backoff_s, max=2.0),
            reraise=True,
        )
        self.usage = Usage()
        """Aggregate usage of every request this pool served."""
        self.failovers = 0
        """Attempts that failed on one actor and moved to another."""
        try:
            check_placement({name: self.spec})
            self._lanes.add(self.spec.replicas)
        except BaseException:
            self.kill()
            if self._owns_ray:
                shutdown()
            raise

    async def wait_ready(self) -> None:
        """Wait until every actor is placed and its worker started.

        Raises:
            WorkerUnavailable: An actor was not placed within `ready_timeout_s` (the resources
                are held by others); the message says what is missing.
            ConfigError: A worker failed to start (bad kind, model or options).
        """
        await self._lanes.wait_ready()

    async def scale(self, replicas: int) -> None:
        """Grow or shrink the pool to `replicas` actors; removed ones finish their requests."""
        await self._lanes.scale(replicas)

    @property
    def router(self) -> Any:
        """The pool's Router (affinity owners, spill count)."""
        return self._lanes.router

    # ----- the Worker protocol --------------------------------------------------------------

    @property
    def capabilities(self) -> WorkerCapabilities:
        """Combined capabilities of the actors (blocks until one has started, if none has)."""
        return self._lanes.capabilities()

    async def generate(self, request: GenerationRequest) -> Completion:
        return await collect_stream(self.stream(request))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        if self._closed:
            raise WorkerDead(f"pool {self.name!r} is closed; create a new RayPool")
        await self._lanes.wait_ready()
        rid = request.request_id
        attempt = Attempt(request)
        self._attempts[rid] = attempt
        retrying = self._retrying.copy()
        try:
            while True:
                chunk: Chunk = await retrying(self._next_chunk, attempt)
                for text, tokens in zip(chunk.texts, chunk.tokens, strict=True):
                    attempt.add(text, tokens)
                    yield StreamDelta(text=text, tokens=tokens)
                if chunk.completion is not None:
                    final = attempt.finish(chunk.completion)
                    self.usage.add_completion(final)
                    yield StreamDelta(text="", completion=final)
                    return
        finally:
            self._attempts.pop(rid, None)
            self._aborted.discard(rid)
            lane = self._release(attempt)
            if lane is not None and lane.state != "dead":
                # the consumer went away mid-request: stop it on the actor, fire and forget
                lane.actor.release.remote(rid)

    def _release(self, attempt: Attempt) -> Lane | None:
        lane, attempt.lane = attempt.lane, None
        if lane is not None:
            self._lanes.unsubscribe(lane, attempt.request.request_id)
            self._lanes.release(lane, attempt.reserved)
            attempt.reserved, attempt.inbox = 0, None
        return lane

    async def _next_chunk(self, attempt: Attempt) -> Chunk:
        """The request's next chunk: opened on a lane (after a failure, another one), then
        delivered by the lane's poller."""
        lane = attempt.lane
        rid = attempt.request.request_id
        item: Any
        if lane is None:
            if rid in self._aborted:
                return _NOTHING._replace(completion=attempt.local("abort", self.worker_id))
            reserve = max(1, attempt.left)
            lane = await self._lanes.acquire(
                attempt.request.affinity_key, reserve, attempt.failed, lambda: rid in self._aborted
            )
            if lane is None:
                return _NOTHING._replace(completion=attempt.local("abort", self.worker_id))
            resume = attempt.request.text is not None or _continues_prefix(lane)
            if resume and attempt.texts and attempt.left <= 0:
                self._lanes.release(lane, reserve)
                return _NOTHING._replace(completion=attempt.local("length", attempt.failed[-1]))
            attempt.lane, attempt.reserved = lane, reserve
            wait_s, linger_s = self.failover.poll_wait_s, self.failover.linger_s
            call = lane.actor.open.remote(attempt.now(resume=resume), wait_s, linger_s)
            try:
                item = await asyncio.wait_for(call, wait_s + self.failover.call_timeout_s)
            except (RayError, TimeoutError) as exc:
                item = exc
            opened = not isinstance(item, BaseException) and item.completion is None
            if opened and rid in self._aborted:  # aborted while `open` was on its way
                lane.actor.abort.remote(rid)
        else:
            assert attempt.inbox is not None
            item = await attempt.inbox.get()
        if isinstance(item, BaseException):
            self._attempt_failed(attempt, lane, item)
        if item.completion is not None:
            self._release(attempt)
        elif attempt.inbox is None:
            attempt.inbox = self._lanes.subscribe(lane, rid)
        return item  # type: ignore[no-any-return]

    def _attempt_failed(self, attempt: Attempt, lane: Lane, exc: BaseException) -> None:
        """Sort out why an attempt failed: retry elsewhere, or raise the caller's error."""
        rid = attempt.request.request_id
        if self._closed:
            self._release(attempt)
            raise WorkerDead(f"pool {self.name!r} was closed while request {rid} ran") from None
        if isinstance(exc, RayTaskError) and exc.cause is not None:
            exc = exc.cause
        if isinstance(exc, TimeoutError):
            lane.actor.release.remote(rid)  # it may be alive but stuck
            exc = TimeoutError(f"no answer within {self.failover.call_timeout_s:g} s")
        if isinstance(exc, RayActorError | TimeoutError | WorkerDead):
            self._failed(attempt, lane, exc, suspect=True)
        if isinstance(exc, WorkerUnavailable):
            self._failed(attempt, lane, exc, suspect=False)
        self._release(attempt)
        if isinstance(exc, ThreadloomError):
            raise exc
        raise WorkerError(f"{lane.name} failed on {rid}: {first_line(exc)}") from exc

    def _failed(self, attempt: Attempt, lane: Lane, exc: BaseException, *, suspect: bool) -> None:
        """Book an attempt's failure and raise what makes tenacity retry it (or give up)."""
        self._release(attempt)
        attempt.failed.append(lane.name)
        self.failovers += 1
        if suspect:
            self._lanes.suspect(lane)
        rid = attempt.request.request_id
        reason = first_line(exc)
        if len(attempt.failed) >= self.failover.max_attempts:
            raise WorkerUnavailable(
                f"request {rid} failed on {len(attempt.failed)} actors "
                f"({', '.join(attempt.failed)}); last error: {reason}. Check the pool with "
                "`threadloom workers --ray-address ...` and the actors' logs"
            ) from None
        logger.warning("request %s failed on %s (%s); retrying on another actor",
                       rid, lane.name, reason)  # fmt: skip
        raise _Failover(reason)

    async def abort(self, request_id: str) -> bool:
        attempt = self._attempts.get(request_id)
        if attempt is None:
            return False
        # remembered whatever happens next: waiting for a slot, between attempts, or with its
        # `open` still on the way (checked again when `open` answers, and by the actor)
        self._aborted.add(request_id)
        lane = attempt.lane
        if lane is None:
            self._lanes.notify()
            return True
        with contextlib.suppress(RayError, TimeoutError):
            call = lane.actor.abort.remote(request_id)
            await asyncio.wait_for(call, self.failover.call_timeout_s)
        return True

    # ----- inspection and shutdown ----------------------------------------------------------

    async def describe(self) -> list[dict[str, Any]]:
        """Each actor: node, resources, model, load and speculation (as the actor reports)."""

        async def one(lane: Lane) -> dict[str, Any]:
            entry: dict[str, Any] = {"worker_id": lane.name, "pool": self.name}
            try:
                entry.update(await asyncio.wait_for(lane.actor.describe.remote(), 10.0))
            except (RayError, TimeoutError) as exc:
                entry["error"] = first_line(exc)
            entry.update(state=lane.state, capacity=lane.capacity)
            entry.update(routed_in_flight=lane.in_flight, routed_tokens=lane.tokens)
            return entry

        return list(await asyncio.gather(*(one(lane) for lane in self._lanes.members)))

    @property
    def lanes(self) -> list[dict[str, Any]]:
        """The pool's view of its actors: name, state, capacity, routed load, node."""
        return [
            {
                "worker_id": lane.name,
                "state": lane.state,
                "capacity": lane.capacity,
                "in_flight": lane.in_flight,
                "tokens": lane.tokens,
                "node_id": lane.info.get("node_id", ""),
            }
            for lane in self._lanes.members
        ]

    def actor(self, worker_id: str) -> Any:
        """The Ray actor handle of a worker (e.g. to `ray.kill` it in a failover drill)."""
        return self._lanes.find(worker_id).actor

    def kill(self) -> None:
        """Kill every actor at once, without closing workers (`close` is the orderly way)."""
        self._lanes.kill()

    async def close(self) -> None:
        """Close every worker and kill the actors; shut Ray down if this pool started it."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._lanes.close()
        finally:
            if self._owns_ray:
                shutdown()
