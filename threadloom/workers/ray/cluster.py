"""Ray plumbing for RayPool: connecting, checking resources, placing actors; and RayCluster.

`RayCluster` builds every pool of a cluster file and is itself a Worker that generates with
its generator pool; its reward pool is there for process reward models.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from threadloom.errors import ConfigError, MissingDependencyError
from threadloom.types import Completion, GenerationRequest, Usage
from threadloom.workers.base import StreamDelta, Worker, WorkerCapabilities
from threadloom.workers.core import BaseWorker
from threadloom.workers.ray.actor import WorkerHost
from threadloom.workers.ray.config import (
    ClusterConfig,
    PoolSpec,
    load_cluster_config,
    placement_problems,
)
from threadloom.workers.ray.local import start_local_cluster

try:
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError.for_extra("ray", "ray", "Running workers on Ray") from exc

logger = logging.getLogger(__name__)


def connect(
    address: str | None = None, *, namespace: str = "threadloom", num_cpus: int | None = None
) -> bool:
    """Join a Ray cluster, or start a local one; returns True when this call did either.

    Args:
        address: 'auto' (the cluster on this machine), 'ray://host:10001' or 'host:6379';
            None uses RAY_ADDRESS, else starts a local cluster (on 127.0.0.1 only, with token
            authentication: see `ray_local`).
        namespace: Namespace for the actors.
        num_cpus: CPUs of a local cluster (None: all cores).

    Returns:
        False when Ray was already initialized in this process (its owner shuts it down).

    Raises:
        ConfigError: Nothing answers at the address.
    """
    if ray.is_initialized():
        return False
    target = address or os.environ.get("RAY_ADDRESS") or None
    if target == "local":
        target = None  # a new local cluster, started locked down like the default
    if target:
        _probe(target)
    try:
        if target:
            ray.init(address=target, namespace=namespace, log_to_driver=True)
        else:
            # a new instance, even if `ray start` left one running on this machine
            start_local_cluster(namespace=namespace, num_cpus=num_cpus)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(
            f"could not reach a Ray cluster at {target!r}: {exc}. Start one with "
            "`ray start --head`, check the address (or RAY_ADDRESS), or leave the address out "
            "to start a local cluster"
        ) from None
    return True


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast when nothing listens at an explicit address (Ray itself retries for minutes)."""
    host_port = address.removeprefix("ray://").removeprefix("http://").rstrip("/")
    host, _, port = host_port.rpartition(":")
    if address in ("auto", "local") or not host or not port.isdigit():
        return  # Ray resolves these itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(
            f"nothing answers at Ray address {address!r} ({exc}). Start the head node with "
            "`ray start --head`, check the host and port (6379 by default; ray:// uses 10001), "
            "or leave the address out to start a local cluster"
        ) from None


def shutdown() -> None:
    """Disconnect from Ray (stopping a local cluster this process started)."""
    if ray.is_initialized():
        ray.shutdown()


def node_resources() -> list[dict[str, float]]:
    """Total resources of each alive node."""
    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def check_placement(pools: Mapping[str, PoolSpec]) -> None:
    """Fail now, with what to change, when pools can never be placed on this cluster.

    An actor that asks for more than any node has would otherwise wait forever, silently.

    Raises:
        ConfigError: Some replica fits no node, or all replicas together exceed the cluster.
    """
    problems = placement_problems(pools, node_resources())
    if problems:
        raise ConfigError("; ".join(problems))


@cache
def _remote_host() -> Any:
    return ray.remote(WorkerHost)


def _is_llamacpp(spec: str) -> bool:
    from threadloom.workers.registry import worker_kinds

    kind = spec.partition(":")[0]
    return worker_kinds.canonical(kind) == "llamacpp" or spec.endswith(".gguf")


def spawn_actor(
    spec: PoolSpec,
    *,
    pool: str,
    name: str,
    namespace: str,
    factory: Callable[[], Worker] | None = None,
) -> tuple[Any, Any]:
    """Create one actor of a pool (placement is asynchronous); returns (handle, group or None).

    llama.cpp actors get `n_threads` = their CPUs unless the options set it, and every actor
    runs with OMP_WAIT_POLICY=PASSIVE so idle threads do not spin on shared cores.
    """
    options = dict(spec.options)
    if spec.speculation is not None:
        options["speculation"] = dict(spec.speculation)
    if spec.tensor_parallel_size > 1:
        options.setdefault("tensor_parallel_size", spec.tensor_parallel_size)
    if factory is None and _is_llamacpp(spec.worker_spec):
        options.setdefault("n_threads", max(1, int(spec.resources.num_cpus)))
    actor_options: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "max_restarts": spec.max_restarts,
        "max_task_retries": 0,
        "runtime_env": {"env_vars": {"OMP_WAIT_POLICY": "PASSIVE", **spec.env}},
    }
    resources = spec.resources
    group = None
    bundles = spec.bundles()
    if bundles:
        # the engine's own workers (one per shard) are placed in the group's other bundles
        group = placement_group(bundles, strategy="STRICT_PACK", name=f"{name}-group")
        head = bundles[0]
        actor_options.update(
            num_cpus=head.get("CPU", 0.0),
            resources=dict(resources.custom),
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                placement_group=group,
                placement_group_bundle_index=0,
                placement_group_capture_child_tasks=True,
            ),
        )
        if "memory" in head:
            actor_options["memory"] = head["memory"]
    else:
        actor_options.update(
            num_cpus=resources.num_cpus,
            num_gpus=resources.num_gpus,
            resources=dict(resources.custom),
        )
        if resources.memory_gb is not None:
            actor_options["memory"] = resources.memory_gb * 2**30
    host = _remote_host().options(**actor_options)
    return host.remote(spec.worker_spec, options, name, pool, factory), group


def kill_actor(handle: Any, group: Any = None) -> None:
    """Kill an actor for good (no restart) and free its placement group."""
    try:
        ray.kill(handle, no_restart=True)
    except Exception as exc:  # already gone
        logger.debug("kill %s: %s", handle, exc)
    if group is not None:
        try:
            remove_placement_group(group)
        except Exception as exc:
            logger.debug("remove placement group: %s", exc)


def free_resources() -> dict[str, float]:
    """Resources not reserved by any actor or task right now."""
    return dict(ray.available_resources())


async def list_actors(
    namespace: str = "threadloom", timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """Describe every threadloom actor alive in a namespace (any job's), for `workers`."""
    names = sorted(
        entry["name"]
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry.get("namespace") == namespace
    )

    async def one(name: str) -> dict[str, Any]:
        try:
            handle = ray.get_actor(name, namespace=namespace)
            return dict(await asyncio.wait_for(handle.describe.remote(), timeout_s))
        except Exception as exc:
            return {"worker_id": name, "error": f"{type(exc).__name__}: {exc}"[:200]}

    return list(await asyncio.gather(*(one(n) for n in names)))


class RayCluster(BaseWorker):
    """Every pool of a cluster file, on Ray; a Worker that generates with its generator pool.

    Args:
        config: A ClusterConfig, or the path of a cluster file.
        address: Overrides the file's `ray.address` (e.g. from --ray-address).
        factories: Pool name -> function building that pool's worker, instead of its kind.

    Raises:
        ConfigError: The file is invalid or its pools can never fit the cluster.
    """

    worker_id = "ray-cluster"

    def __init__(
        self,
        config: ClusterConfig | str | Path,
        *,
        address: str | None = None,
        factories: Mapping[str, Callable[[], Worker]] | None = None,
    ) -> None:
        from threadloom.workers.ray.pool import RayPool

        self.config = config if isinstance(config, ClusterConfig) else load_cluster_config(config)
        ray_spec = self.config.ray
        self._owns_ray = connect(
            address or ray_spec.address, namespace=ray_spec.namespace, num_cpus=ray_spec.num_cpus
        )
        self.pools: dict[str, RayPool] = {}
        try:
            check_placement(self.config.pools)
            for name, spec in self.config.pools.items():
                self.pools[name] = RayPool(
                    spec,
                    name=name,
                    routing=self.config.routing,
                    failover=self.config.failover,
                    namespace=ray_spec.namespace,
                    factory=(factories or {}).get(name),
                )
        except BaseException:
            for created in self.pools.values():
                created.kill()
            if self._owns_ray:
                shutdown()
            raise

    @property
    def generator(self) -> Any:
        """The generator pool (a RayPool)."""
        return self.pools[self.config.generator_pool]

    @property
    def reward(self) -> Any:
        """The first reward-model pool, or None when the file declares none."""
        for name, spec in self.config.pools.items():
            if spec.role == "reward":
                return self.pools[name]
        return None

    @property
    def usage(self) -> Usage:
        return self.generator.usage

    @property
    def capabilities(self) -> WorkerCapabilities:
        return self.generator.capabilities

    async def wait_ready(self) -> None:
        """Wait until every actor of every pool is placed and started."""
        await asyncio.gather(*(pool.wait_ready() for pool in self.pools.values()))

    async def generate(self, request: GenerationRequest) -> Completion:
        return await self.generator.generate(request)

    def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        return self.generator.stream(request)

    async def abort(self, request_id: str) -> bool:
        return bool(await self.generator.abort(request_id))

    async def describe(self) -> list[dict[str, Any]]:
        """One entry per actor of every pool: node, resources, model, load, speculation."""
        found = await asyncio.gather(*(pool.describe() for pool in self.pools.values()))
        return [entry for entries in found for entry in entries]

    async def _shutdown(self) -> None:
        """Stop every actor; shut Ray down if this cluster object started or joined it."""
        try:
            await asyncio.gather(*(pool.close() for pool in self.pools.values()))
        finally:
            if self._owns_ray:
                shutdown()


def open_ray_worker(target: str = "", *, address: str | None = None, **options: Any) -> Any:
    """A Worker on Ray: a RayCluster for a cluster file, else a RayPool of one worker spec.

    Args:
        target: 'cluster.yaml' (also .yml / .json), or a worker spec such as 'llamacpp' or
            'fake:42' (empty: the embedded default model).
        address: Ray address (None: the file's, else RAY_ADDRESS, else a local cluster).
        **options: PoolSpec fields for a single pool (replicas, resources, options, ...).
    """
    if target.lower().endswith((".yaml", ".yml", ".json")):
        if options:
            raise ConfigError(
                f"options {sorted(options)} do not apply to a cluster file; set them in {target}"
            )
        return RayCluster(target, address=address)
    from threadloom.workers.ray.pool import RayPool

    return RayPool(target or "llamacpp", address=address, **options)


def placement_timeout_message(pool: str, name: str, spec: PoolSpec, waited_s: float) -> str:
    demand = spec.demand()
    free = {k: round(v, 3) for k, v in free_resources().items() if k in demand}
    return (
        f"actor {name} of pool {pool!r} was not placed within {waited_s:g} s: it needs {demand} "
        f"and the cluster has {free} free. Other actors or jobs hold these resources: wait for "
        "them, stop them, lower the pool's replicas or resources, or raise "
        "failover.ready_timeout_s"
    )


__all__ = [
    "RayCluster",
    "check_placement",
    "connect",
    "kill_actor",
    "list_actors",
    "open_ray_worker",
    "shutdown",
    "spawn_actor",
]
