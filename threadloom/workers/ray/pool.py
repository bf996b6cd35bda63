"""RayPool: replicas of one worker in Ray actors, served through a Pool.

Each replica is a Ray actor (`WorkerHost`) created with the pool's resources. RayPool is the
transport: it places the actors, starts them, presents each one as a member Worker (`Lane`:
open, then poll in chunks; see `ray.actor`), grows and shrinks them, and kills them. Routing
(least-loaded by in-flight tokens, prefix affinity, backpressure) and failover (resume on
another actor from the text already streamed, within `max_tokens`) are a `Pool`'s, the same
as for in-process workers. An actor that died or stopped answering within `call_timeout_s`
leaves routing until Ray has restarted it (`max_restarts`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from pydantic import ValidationError

from threadloom.errors import ConfigError, WorkerUnavailable, describe_errors
from threadloom.types import GenerationRequest, Usage
from threadloom.workers.base import StreamDelta, Worker, WorkerCapabilities
from threadloom.workers.core import BaseWorker
from threadloom.workers.pool import Failover, Pool
from threadloom.workers.ray.cluster import (
    check_placement,
    connect,
    placement_timeout_message,
    shutdown,
    spawn_actor,
)
from threadloom.workers.ray.config import FailoverSpec, PoolSpec, RoutingSpec
from threadloom.workers.ray.lanes import Lane, first_line
from threadloom.workers.routing import Router
from threadloom.workers.wrappers.signals import Closing

try:
    import ray
    from ray.exceptions import RayError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from threadloom.errors import MissingDependencyError

    raise MissingDependencyError.for_extra("ray", "ray", "RayPool") from exc

logger = logging.getLogger(__name__)

__all__ = ["RayPool"]

_LIVE = ("starting", "ready", "suspect")


class RayPool(BaseWorker):
    """Replicas of one worker, each in a Ray actor; a pool is itself a Worker.

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
            self.failover = FailoverSpec.model_validate(failover or {})
        except ValidationError as exc:
            raise ConfigError(f"pool {name!r}: {describe_errors(exc)}") from None
        self.name = name
        self.worker_id = f"ray-pool:{name}"
        self.namespace = namespace
        self._pool = Pool(
            router=Router(spill_tokens=routing.spill_tokens, max_keys=routing.max_affinity_keys),
            failover=Failover(
                max_attempts=self.failover.max_attempts,
                backoff_s=self.failover.backoff_s,
                ready_timeout_s=self.failover.ready_timeout_s,
            ),
            max_concurrency=self.spec.max_concurrency,
            worker_id=self.worker_id,
        )
        self._lanes: list[Lane] = []
        """Every actor, started or not, in the order they were created."""
        self._factory = factory
        self._token = uuid.uuid4().hex[:6]
        self._count = 0
        self._owns_ray = connect(address, namespace=namespace)
        try:
            check_placement({name: self.spec})
            self._spawn(self.spec.replicas)
        except BaseException:
            self.kill()
            if self._owns_ray:
                shutdown()
            raise

    # ----- actors ---------------------------------------------------------------------------

    def _spawn(self, count: int) -> list[Lane]:
        """Create `count` actors (placement happens in the background)."""
        added = []
        for _ in range(count):
            name = f"{self.name}-{self._count}-{self._token}"
            self._count += 1
            handle, group = spawn_actor(
                self.spec, pool=self.name, name=name, namespace=self.namespace,
                factory=self._factory,
            )  # fmt: skip
            added.append(Lane(name, handle, group, pool=self.name, failover=self.failover))
        self._lanes.extend(added)
        return added

    async def _start(self, lane: Lane) -> None:
        """Wait until an actor is placed and its worker loaded, then route to it."""
        if lane.startup is None:
            lane.startup = asyncio.ensure_future(self._describe_new(lane))
        self._join(lane, await lane.startup)

    async def _describe_new(self, lane: Lane) -> dict[str, Any]:
        timeout = self.failover.ready_timeout_s
        try:
            return await lane.describe(timeout)
        except TimeoutError:
            lane.kill()
            raise WorkerUnavailable(
                placement_timeout_message(self.name, lane.worker_id, self.spec, timeout)
            ) from None
        except RayError as exc:
            lane.kill()
            raise ConfigError(
                f"pool {self.name!r}: the worker {self.spec.worker_spec!r} could not start in "
                f"actor {lane.worker_id}: {first_line(exc)}. Check the pool's kind, model and "
                "options"
            ) from None

    def _join(self, lane: Lane, info: dict[str, Any]) -> None:
        if not lane.closed and self._pool.member(lane) is None:
            lane.info = info
            self._pool.add(lane)

    async def wait_ready(self) -> None:
        """Wait until every actor is placed and its worker started.

        Raises:
            WorkerUnavailable: An actor was not placed within `ready_timeout_s` (the resources
                are held by others); the message says what is missing.
            ConfigError: A worker failed to start (bad kind, model or options).
        """
        starting = [lane for lane in self._lanes if self._state(lane) == "starting"]
        if starting:
            results = await asyncio.gather(
                *(self._start(lane) for lane in starting), return_exceptions=True
            )
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]

    async def scale(self, replicas: int) -> None:
        """Grow or shrink the pool to `replicas` actors; removed ones finish their requests."""
        if replicas < 0:
            raise ConfigError(f"replicas must be at least 0, got {replicas}")
        live = [lane for lane in self._lanes if self._state(lane) in _LIVE]
        if replicas > len(live):
            extra = self.spec.model_copy(update={"replicas": replicas - len(live)})
            check_placement({self.name: extra})
            added = self._spawn(replicas - len(live))
            await asyncio.gather(*(self._start(lane) for lane in added))
            return
        victims = sorted(live, key=lambda lane: (self._state(lane) == "ready", self._tokens(lane)))
        for lane in victims[: len(live) - replicas]:
            await self._pool.remove(lane, close=False)  # its requests finish first
            await lane.close()
            self._lanes.remove(lane)

    def _state(self, lane: Lane) -> str:
        member = self._pool.member(lane)
        if member is not None:
            return member.state
        return "dead" if lane.closed else "starting"

    def _tokens(self, lane: Lane) -> int:
        member = self._pool.member(lane)
        return 0 if member is None else member.tokens

    @property
    def router(self) -> Router:
        """The pool's Router (affinity owners, spill count)."""
        return self._pool.router

    @property
    def usage(self) -> Usage:
        """Aggregate usage of every request this pool served."""
        return self._pool.usage

    @property
    def failovers(self) -> int:
        """Attempts that failed on one actor and moved to another."""
        return self._pool.failovers

    # ----- the Worker protocol --------------------------------------------------------------

    @property
    def capabilities(self) -> WorkerCapabilities:
        """Combined capabilities of the actors (blocks until one has started, if none has)."""
        if not self._pool.members and self._lanes:
            refs = [lane.actor.describe.remote() for lane in self._lanes]
            infos = ray.get(refs, timeout=self.failover.ready_timeout_s)
            for lane, info in zip(self._lanes, infos, strict=True):
                self._join(lane, info)
        return self._pool.capabilities

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        self.check_open()
        await self.wait_ready()
        async with Closing(self._pool.stream(request)) as deltas:
            async for delta in deltas:
                yield delta

    async def abort(self, request_id: str) -> bool:
        return await self._pool.abort(request_id)

    def holder(self, request_id: str) -> str | None:
        """The actor serving a request now (None: waiting, between attempts, or unknown)."""
        worker = self._pool.holder(request_id)
        return None if worker is None else worker.worker_id

    # ----- inspection and shutdown ----------------------------------------------------------

    async def describe(self) -> list[dict[str, Any]]:
        """Each actor: node, resources, model, load and speculation (as the actor reports)."""

        async def one(lane: Lane, view: dict[str, Any]) -> dict[str, Any]:
            entry: dict[str, Any] = {"worker_id": lane.worker_id, "pool": self.name}
            try:
                entry.update(await lane.describe(10.0))
            except (RayError, TimeoutError) as exc:
                entry["error"] = first_line(exc)
            entry.update(state=view["state"], capacity=view["capacity"])
            entry.update(routed_in_flight=view["in_flight"], routed_tokens=view["tokens"])
            return entry

        pairs = zip(self._lanes, self.lanes, strict=True)
        return list(await asyncio.gather(*(one(lane, view) for lane, view in pairs)))

    @property
    def lanes(self) -> list[dict[str, Any]]:
        """The pool's view of its actors: name, state, capacity, routed load, node."""
        views = []
        for lane in self._lanes:
            member = self._pool.member(lane)
            views.append(
                {
                    "worker_id": lane.worker_id,
                    "state": self._state(lane),
                    "capacity": member.capacity if member else 0,
                    "in_flight": member.in_flight if member else 0,
                    "tokens": member.tokens if member else 0,
                    "node_id": lane.info.get("node_id", ""),
                }
            )
        return views

    def actor(self, worker_id: str) -> Any:
        """The Ray actor handle of a worker (e.g. to `ray.kill` it in a failover drill).

        Raises:
            ConfigError: No actor of this pool has that name.
        """
        for lane in self._lanes:
            if lane.worker_id == worker_id:
                return lane.actor
        raise ConfigError(
            f"no actor named {worker_id!r} in pool {self.name!r}; its actors are "
            f"{[lane.worker_id for lane in self._lanes]}"
        )

    def kill(self) -> None:
        """Kill every actor at once, without closing workers (`close` is the orderly way)."""
        for lane in self._lanes:
            lane.kill()

    async def _shutdown(self) -> None:
        """Close every worker and kill the actors; shut Ray down if this pool started it."""
        try:
            await self._pool.close()
            await asyncio.gather(*(lane.close() for lane in self._lanes))
        finally:
            if self._owns_ray:
                shutdown()
