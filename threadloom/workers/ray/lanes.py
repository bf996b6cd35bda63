"""The actors behind a RayPool: starting, routing slots, watching restarts, scaling, stopping."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from threadloom.errors import ConfigError, MissingDependencyError, WorkerDead, WorkerUnavailable
from threadloom.workers.base import Worker, WorkerCapabilities
from threadloom.workers.ray.cluster import (
    check_placement,
    kill_actor,
    placement_timeout_message,
    spawn_actor,
)
from threadloom.workers.ray.config import FailoverSpec, PoolSpec, RoutingSpec
from threadloom.workers.routing import Router

try:
    import ray
    from ray.exceptions import ActorUnavailableError, RayActorError, RayError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError.for_extra("ray", "ray", "RayPool") from exc

logger = logging.getLogger(__name__)

__all__ = ["Lane", "Lanes", "first_line"]

LIVE = ("starting", "ready", "suspect")


@dataclass(eq=False)
class Lane:
    """One actor of a pool, as the pool sees it."""

    name: str
    actor: Any
    group: Any = None
    state: str = "starting"
    """starting, ready, suspect (failed; Ray may be restarting it), draining, dead."""
    capacity: int = 1
    in_flight: int = 0
    tokens: int = 0
    """max_tokens of the requests routed here and not finished (the load estimate)."""
    info: dict[str, Any] = field(default_factory=dict)
    startup: asyncio.Task[None] | None = None
    inboxes: dict[str, asyncio.Queue[Any]] = field(default_factory=dict)
    """Running requests polled together, each with the queue its chunks are delivered to."""
    poller: asyncio.Task[None] | None = None


class Lanes:
    """The actors of one pool and their load; routes requests to them with a `Router`."""

    def __init__(
        self,
        spec: PoolSpec,
        *,
        pool: str,
        namespace: str,
        routing: RoutingSpec,
        failover: FailoverSpec,
        factory: Callable[[], Worker] | None = None,
    ) -> None:
        self.spec = spec
        self.pool = pool
        self.namespace = namespace
        self.failover = failover
        self.router = Router(spill_tokens=routing.spill_tokens, max_keys=routing.max_affinity_keys)
        self.members: list[Lane] = []
        self._factory = factory
        self._token = uuid.uuid4().hex[:6]
        self._count = 0
        self._changed: asyncio.Event | None = None
        self._watchers: set[asyncio.Task[None]] = set()

    # ----- lifecycle ------------------------------------------------------------------------

    def add(self, count: int) -> list[Lane]:
        """Create `count` actors (placement happens in the background)."""
        added = []
        for _ in range(count):
            name = f"{self.pool}-{self._count}-{self._token}"
            self._count += 1
            handle, group = spawn_actor(
                self.spec,
                pool=self.pool,
                name=name,
                namespace=self.namespace,
                factory=self._factory,
            )
            added.append(Lane(name, handle, group))
        self.members.extend(added)
        return added

    async def start(self, lane: Lane) -> None:
        """Wait until an actor is placed and its worker loaded (shared by concurrent callers)."""
        if lane.startup is None:
            lane.startup = asyncio.ensure_future(self._start(lane))
        await lane.startup

    async def _start(self, lane: Lane) -> None:
        timeout = self.failover.ready_timeout_s
        try:
            info = await asyncio.wait_for(lane.actor.describe.remote(), timeout)
        except TimeoutError:
            lane.state = "dead"
            kill_actor(lane.actor, lane.group)
            raise WorkerUnavailable(
                placement_timeout_message(self.pool, lane.name, self.spec, timeout)
            ) from None
        except RayError as exc:
            lane.state = "dead"
            kill_actor(lane.actor, lane.group)
            raise ConfigError(
                f"pool {self.pool!r}: the worker {self.spec.worker_spec!r} could not start in "
                f"actor {lane.name}: {first_line(exc)}. Check the pool's kind, model and options"
            ) from None
        self.ready(lane, info)

    def ready(self, lane: Lane, info: dict[str, Any]) -> None:
        lane.info = info
        batch = int(info.get("capabilities", {}).get("max_batch", 1))
        lane.capacity = self.spec.max_concurrency or max(1, batch)
        if lane.state in ("starting", "suspect"):
            lane.state = "ready"
        self.notify()

    async def wait_ready(self) -> None:
        """Wait for every starting actor; raise the first placement or start-up error."""
        starting = [lane for lane in self.members if lane.state == "starting"]
        if starting:
            results = await asyncio.gather(
                *(self.start(lane) for lane in starting), return_exceptions=True
            )
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]

    async def scale(self, replicas: int) -> None:
        """Grow or shrink to `replicas` live actors; removed ones finish their requests first."""
        if replicas < 0:
            raise ConfigError(f"replicas must be at least 0, got {replicas}")
        live = [lane for lane in self.members if lane.state in LIVE]
        if replicas > len(live):
            extra = self.spec.model_copy(update={"replicas": replicas - len(live)})
            check_placement({self.pool: extra})
            added = self.add(replicas - len(live))
            await asyncio.gather(*(self.start(lane) for lane in added))
            return
        victims = sorted(live, key=lambda lane: (lane.state == "ready", lane.tokens))
        victims = victims[: len(live) - replicas]
        for lane in victims:
            lane.state = "draining"
            self.router.forget(lane)
        for lane in victims:
            while lane.in_flight:
                await self.wait_change(None)
            await self.retire(lane)

    async def retire(self, lane: Lane) -> None:
        """Close the worker, kill the actor and drop the lane."""
        lane.state = "dead"
        if lane.poller is not None:
            lane.poller.cancel()
        for inbox in lane.inboxes.values():  # requests still running end now, with an error
            inbox.put_nowait(WorkerDead(f"actor {lane.name} of pool {self.pool!r} was stopped"))
        lane.inboxes.clear()
        with contextlib.suppress(RayError, TimeoutError):
            await asyncio.wait_for(lane.actor.close.remote(), 5.0)
        kill_actor(lane.actor, lane.group)
        if lane in self.members:
            self.members.remove(lane)

    def suspect(self, lane: Lane) -> None:
        """Take a failed actor out of routing and follow it until Ray has restarted it."""
        if lane.state != "ready":
            return
        lane.state = "suspect"
        self.router.forget(lane)

        async def watch() -> None:
            deadline = time.monotonic() + self.failover.ready_timeout_s
            try:
                while time.monotonic() < deadline and lane.state == "suspect":
                    try:
                        info = await asyncio.wait_for(lane.actor.describe.remote(), 5.0)
                    except (ActorUnavailableError, TimeoutError):
                        await asyncio.sleep(0.2)  # being restarted
                        continue
                    except RayActorError:
                        break  # out of restarts
                    logger.info("actor %s is back (restarted by Ray)", lane.name)
                    self.ready(lane, info)
                    return
                if lane.state == "suspect":
                    logger.error("actor %s of pool %s is dead; going on without it",
                                 lane.name, self.pool)  # fmt: skip
                    lane.state = "dead"
                    self.notify()
            finally:
                self._watchers.discard(task)

        task = asyncio.create_task(watch())
        self._watchers.add(task)

    def kill(self) -> None:
        """Kill every actor now, without closing workers."""
        for lane in self.members:
            kill_actor(lane.actor, lane.group)
            lane.state = "dead"

    async def close(self) -> None:
        for task in list(self._watchers):
            task.cancel()
        await asyncio.gather(*(self.retire(lane) for lane in list(self.members)))

    # ----- polling ------------------------------------------------------------------------

    def subscribe(self, lane: Lane, request_id: str) -> asyncio.Queue[Any]:
        """Have a running request polled with the lane's others; its chunks (or the error that
        ended it) arrive on the returned queue."""
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        lane.inboxes[request_id] = inbox
        if lane.poller is None or lane.poller.done():
            lane.poller = asyncio.create_task(self._poll(lane))
        return inbox

    def unsubscribe(self, lane: Lane, request_id: str) -> None:
        lane.inboxes.pop(request_id, None)

    async def _poll(self, lane: Lane) -> None:
        """One round trip at a time for all of a lane's running requests, while there are any."""
        failover = self.failover
        limit = failover.poll_wait_s + failover.call_timeout_s
        while lane.inboxes:
            ids = list(lane.inboxes)
            call = lane.actor.poll.remote(ids, failover.poll_wait_s, failover.linger_s)
            try:
                news = await asyncio.wait_for(call, limit)
            except (RayError, TimeoutError) as exc:
                # the actor died or stopped answering: every request on it fails over
                for waiting in lane.inboxes.values():
                    waiting.put_nowait(exc)
                lane.inboxes.clear()
                return
            for request_id, item in news.items():
                inbox = lane.inboxes.get(request_id)
                if inbox is None:
                    continue  # its consumer went away meanwhile
                inbox.put_nowait(item)
                if isinstance(item, BaseException) or item.completion is not None:
                    del lane.inboxes[request_id]

    # ----- load -----------------------------------------------------------------------------

    def notify(self) -> None:
        """Wake requests waiting for a slot (a request ended, an actor came back)."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_change(self, timeout: float | None) -> bool:
        if self._changed is None:
            self._changed = asyncio.Event()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def acquire(
        self, key: str | None, tokens: int, avoid: list[str], cancelled: Callable[[], bool]
    ) -> Lane | None:
        """A lane with room for a request, waiting while all are full (backpressure).

        Lanes named in `avoid` (where this request failed) are used only if no other has room.
        Returns None when `cancelled()` turns true while waiting.

        Raises:
            WorkerUnavailable: No actor is alive, or none came back within ready_timeout_s.
        """
        while True:
            if cancelled():
                return None
            ready = [lane for lane in self.members if lane.state == "ready"]
            fresh = [lane for lane in ready if lane.name not in avoid]
            lane = self.router.choose(fresh, key, tokens) if fresh else None
            lane = lane or self.router.choose(ready, key, tokens)
            if lane is not None:
                lane.in_flight += 1
                lane.tokens += tokens
                return lane
            if not any(lane.state in LIVE for lane in self.members):
                raise WorkerUnavailable(
                    f"no live actor in pool {self.pool!r}: every replica is dead or gone. "
                    "Check the actors' logs (ray logs), then scale the pool up again"
                )
            timeout = None if ready else self.failover.ready_timeout_s
            if not await self.wait_change(timeout):
                raise WorkerUnavailable(
                    f"no actor of pool {self.pool!r} came back within "
                    f"{self.failover.ready_timeout_s:g} s; see `ray logs` for why they died"
                )

    def release(self, lane: Lane, tokens: int) -> None:
        lane.in_flight -= 1
        lane.tokens -= tokens
        self.notify()

    def find(self, name: str) -> Lane:
        for lane in self.members:
            if lane.name == name:
                return lane
        raise KeyError(f"no actor named {name!r} in pool {self.pool!r}")

    def capabilities(self) -> WorkerCapabilities:
        """Combined capabilities of the actors (asks them, blocking, if none has answered)."""
        lanes = [lane for lane in self.members if lane.info]
        if not lanes and self.members:
            refs = [lane.actor.describe.remote() for lane in self.members]
            infos = ray.get(refs, timeout=self.failover.ready_timeout_s)
            for lane, info in zip(self.members, infos, strict=True):
                self.ready(lane, info)
            lanes = list(self.members)
        caps = [WorkerCapabilities(**lane.info["capabilities"]) for lane in lanes]
        if not caps:
            return WorkerCapabilities()
        return WorkerCapabilities(
            logprobs=all(c.logprobs for c in caps),
            prefix_caching=all(c.prefix_caching for c in caps),
            continues_prefix=all(c.continues_prefix for c in caps),
            speculative_decoding=any(c.speculative_decoding for c in caps),
            max_context=min(c.max_context for c in caps),
            max_batch=sum(lane.capacity for lane in lanes),
            model=", ".join(sorted({c.model for c in caps})),
        )


def first_line(exc: BaseException) -> str:
    """The informative line of an error (Ray puts the remote cause on the last line)."""
    text = str(exc).strip() or type(exc).__name__
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines[-1] if isinstance(exc, RayError) and lines else lines[0])[:300]
