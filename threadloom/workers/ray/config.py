"""The worker config file: pools of Ray actors, their resources, routing and failover.

A cluster file is YAML (or JSON) read into `ClusterConfig`::

    ray:
      address: auto              # or leave out: RAY_ADDRESS, else a local cluster
    pools:
      gen:
        kind: llamacpp
        replicas: 2
        resources: {num_cpus: 1}
        options: {n_ctx: 16384, n_slots: 16}   # 1024 cells per slot
      prm:
        role: reward
        kind: llamacpp
        resources: {num_cpus: 1, custom: {prm_node: 1}}

This module is pure (no Ray import): it parses, validates and checks that the pools fit a
cluster's nodes, so a plan that can never be placed fails before any actor is created.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from threadloom.errors import ConfigError, describe_errors

__all__ = [
    "ClusterConfig",
    "FailoverSpec",
    "PoolSpec",
    "RaySpec",
    "ResourceSpec",
    "RoutingSpec",
    "load_cluster_config",
    "placement_problems",
]

PoolRole = Literal["generator", "reward"]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ResourceSpec(_Config):
    """What one actor of a pool reserves on its node."""

    num_cpus: float = Field(1.0, ge=0)
    """CPU cores per actor; llama.cpp actors also use it as their thread count."""
    num_gpus: float = Field(0.0, ge=0)
    """GPUs per actor (per tensor-parallel shard when tensor_parallel_size > 1)."""
    memory_gb: float | None = Field(None, gt=0)
    """Host memory to reserve per actor, in GiB (None: no reservation)."""
    custom: dict[str, float] = Field(default_factory=dict)
    """Custom node resources, e.g. {"prm_node": 1} to pin a pool to nodes started with it."""

    def demand(self) -> dict[str, float]:
        """The actor's resources as Ray names them (zero entries left out)."""
        out = {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.custom}
        if self.memory_gb is not None:
            out["memory"] = self.memory_gb * 2**30
        return {k: v for k, v in out.items() if v > 0}


class PoolSpec(_Config):
    """One pool: replicas of a worker, each in its own Ray actor."""

    role: PoolRole = "generator"
    """'generator' serves strategies' generations; 'reward' hosts process reward models."""
    kind: str = "llamacpp"
    """Worker spec as `make_worker` reads it: llamacpp, llamacpp:PATH.gguf, fake:REPLY, ..."""
    model: str | None = None
    """Model path or name, appended to the kind as 'kind:model'."""
    replicas: int = Field(1, ge=0)
    """Actors in the pool (0 declares it for a later `scale`)."""
    resources: ResourceSpec = Field(default_factory=ResourceSpec)
    """Resources of each actor."""
    tensor_parallel_size: int = Field(1, ge=1)
    """GPUs one engine spans; above 1 each actor gets a placement group of that many bundles."""
    max_concurrency: int | None = Field(None, ge=1)
    """In-flight requests per actor (default: the worker's batch size)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for the worker's constructor (engine options such as n_ctx)."""
    speculation: dict[str, Any] | None = None
    """Speculative decoding options, passed to the worker as `speculation=`."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment variables of the actor's process."""
    max_restarts: int = Field(3, ge=-1)
    """Times Ray restarts a dead actor (-1: forever)."""

    @model_validator(mode="after")
    def _check(self) -> PoolSpec:
        if self.model is not None and ":" in self.kind:
            raise ValueError(
                f"kind {self.kind!r} already names a model; drop 'model' or write kind without ':'"
            )
        if "worker_id" in self.options:
            raise ValueError("options.worker_id is set by the pool (one name per actor); drop it")
        return self

    @property
    def worker_spec(self) -> str:
        """The spec handed to `make_worker` inside each actor."""
        return self.kind if self.model is None else f"{self.kind}:{self.model}"

    def bundles(self) -> list[dict[str, float]]:
        """Placement-group bundles for a tensor-parallel engine (empty when not needed).

        The first bundle holds the actor (its CPUs and custom resources); one more bundle per
        shard holds a GPU share, so the engine's own Ray workers land beside the actor.
        """
        if self.tensor_parallel_size == 1:
            return []
        head = ResourceSpec(
            num_cpus=self.resources.num_cpus,
            memory_gb=self.resources.memory_gb,
            custom=self.resources.custom,
        ).demand()
        shard = {"GPU": self.resources.num_gpus} if self.resources.num_gpus else {"CPU": 0.001}
        return [head or {"CPU": 0.001}] + [dict(shard) for _ in range(self.tensor_parallel_size)]

    def demand(self) -> dict[str, float]:
        """Everything one replica reserves on its node (all bundles together)."""
        bundles = self.bundles()
        if not bundles:
            return self.resources.demand()
        total: dict[str, float] = {}
        for bundle in bundles:
            for name, amount in bundle.items():
                total[name] = total.get(name, 0.0) + amount
        return total


class RaySpec(_Config):
    """How to reach Ray."""

    address: str | None = None
    """'auto', 'ray://host:10001', 'host:6379'; None: RAY_ADDRESS, else start a local cluster."""
    namespace: str = "threadloom"
    """Ray namespace of the actors (`threadloom workers` lists this one)."""
    num_cpus: int | None = Field(None, ge=1)
    """CPUs of a local cluster started here (None: all cores)."""


class RoutingSpec(_Config):
    """How requests are spread over a pool's actors."""

    spill_tokens: int | None = Field(4096, ge=0)
    """An affinity owner holding this many more in-flight tokens than the least-loaded actor
    counts as overloaded and the request spills (None: spill only when the owner is full)."""
    max_affinity_keys: int = Field(100_000, ge=1)
    """Affinity keys remembered (least recently used are forgotten first)."""


class FailoverSpec(_Config):
    """What happens when an actor dies or stops answering."""

    max_attempts: int = Field(3, ge=1)
    """Actors one request may be tried on (the first included)."""
    call_timeout_s: float = Field(30.0, gt=0)
    """An actor call unanswered this long (beyond its poll wait) counts as a failure."""
    poll_wait_s: float = Field(1.0, gt=0)
    """How long an actor holds a poll open waiting for new tokens (the heartbeat interval)."""
    linger_s: float = Field(0.005, ge=0)
    """How long an actor waits for a request to finish before sending a partial chunk (one
    round trip for short replies; at most this much delay per streamed chunk)."""
    backoff_s: float = Field(0.05, ge=0)
    """First pause before a retry; doubles per retry, capped at 2 s."""
    ready_timeout_s: float = Field(60.0, gt=0)
    """How long actors may take to be placed and start (or restart) before the pool gives up."""


class ClusterConfig(_Config):
    """A whole cluster file: connection, pools, routing and failover."""

    ray: RaySpec = Field(default_factory=RaySpec)
    """How to reach Ray."""
    pools: dict[str, PoolSpec]
    """Pools by name; exactly one has role 'generator'."""
    routing: RoutingSpec = Field(default_factory=RoutingSpec)
    """Routing policy shared by all pools."""
    failover: FailoverSpec = Field(default_factory=FailoverSpec)
    """Failover policy shared by all pools."""

    @model_validator(mode="after")
    def _one_generator(self) -> ClusterConfig:
        generators = [n for n, p in self.pools.items() if p.role == "generator"]
        if len(generators) != 1:
            raise ValueError(
                f"declare exactly one pool with role 'generator' (found {generators or 'none'}); "
                "give the others role 'reward'"
            )
        for name in self.pools:
            if not name or not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"pool name {name!r}: use letters, digits, '-' and '_' only")
        return self

    @property
    def generator_pool(self) -> str:
        return next(n for n, p in self.pools.items() if p.role == "generator")


def load_cluster_config(source: str | Path | Mapping[str, Any]) -> ClusterConfig:
    """Read and validate a cluster file (YAML/JSON path) or an already parsed mapping.

    Raises:
        ConfigError: The file is missing, not YAML, or does not fit `ClusterConfig`; the
            message names the offending field.
    """
    where = "cluster config"
    if isinstance(source, Mapping):
        data: Any = source
    else:
        path = Path(source).expanduser()
        where = str(path)
        if not path.is_file():
            raise ConfigError(f"worker config {path} does not exist; pass a YAML file of pools")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping with a 'pools' section")
    try:
        return ClusterConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {describe_errors(exc)}") from None


def placement_problems(
    pools: Mapping[str, PoolSpec], nodes: Sequence[Mapping[str, float]]
) -> list[str]:
    """Why these pools can never be placed on nodes of these total resources ([] if they can).

    Each replica must fit on one node; all replicas together are packed first-fit, biggest
    first. Usage by other jobs is not considered: that only delays placement.
    """
    problems: list[str] = []
    free = [dict(node) for node in nodes]
    replicas: list[tuple[str, dict[str, float]]] = []
    for name, spec in pools.items():
        demand = spec.demand()
        if not any(_fits(demand, node) for node in nodes):
            problems.append(
                f"pool {name!r}: one actor needs {_fmt(demand)} but no node has that much "
                f"(largest: {_fmt(_largest(nodes, demand))}); lower its resources or add a node "
                "with them (ray start --resources / --num-cpus / --num-gpus)"
            )
            continue
        replicas.extend((name, demand) for _ in range(spec.replicas))
    if problems:
        return problems
    replicas.sort(key=lambda r: (r[1].get("GPU", 0.0), r[1].get("CPU", 0.0)), reverse=True)
    for name, demand in replicas:
        node = next((n for n in free if _fits(demand, n)), None)
        if node is None:
            needed = _sum(d for _, d in replicas)
            have = {k: v for k, v in _sum(nodes).items() if k in needed}
            problems.append(
                f"pool {name!r}: the cluster cannot hold every replica at once (all pools need "
                f"{_fmt(needed)}, the nodes have {_fmt(have)}); lower replicas or resources, "
                "or add nodes"
            )
            break
        for key, amount in demand.items():
            node[key] = node.get(key, 0.0) - amount
    return problems


def _fits(demand: Mapping[str, float], node: Mapping[str, float]) -> bool:
    return all(node.get(k, 0.0) + 1e-9 >= v for k, v in demand.items())


def _sum(items: Any) -> dict[str, float]:
    total: dict[str, float] = {}
    for item in items:
        for key, amount in item.items():
            total[key] = total.get(key, 0.0) + amount
    return total


def _largest(nodes: Sequence[Mapping[str, float]], demand: Mapping[str, float]) -> dict[str, float]:
    if not nodes:
        return {}
    best = max(nodes, key=lambda n: sum(min(n.get(k, 0.0), v) / v for k, v in demand.items()))
    return {k: best.get(k, 0.0) for k in demand}


def _fmt(resources: Mapping[str, float]) -> str:
    parts = []
    for key, amount in sorted(resources.items()):
        if key == "memory":
            parts.append(f"memory={amount / 2**30:.1f}GiB")
        else:
            parts.append(f"{key}={amount:g}")
    return "{" + ", ".join(parts) + "}" if parts else "{}"
