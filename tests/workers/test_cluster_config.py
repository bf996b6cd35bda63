"""Cluster files and routing, without Ray: parsing, clear errors, placement checks, Router."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from threadloom.errors import ConfigError
from threadloom.workers.ray.config import (
    ClusterConfig,
    PoolSpec,
    load_cluster_config,
    placement_problems,
)
from threadloom.workers.routing import Router

CLUSTER_YAML = """
ray:
  address: auto
pools:
  gen:
    kind: llamacpp
    replicas: 6
    resources: {num_cpus: 1}
    options: {n_ctx: 4096}
  prm:
    role: reward
    kind: llamacpp
    replicas: 2
    resources: {num_cpus: 1, custom: {prm_node: 1}}
routing: {spill_tokens: 1024}
failover: {max_attempts: 2, call_timeout_s: 10}
"""


def test_cluster_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER_YAML)
    config = load_cluster_config(path)
    assert config.ray.address == "auto"
    assert config.generator_pool == "gen"
    assert config.pools["prm"].role == "reward"
    assert config.pools["gen"].replicas == 6 and config.pools["prm"].replicas == 2
    assert config.pools["prm"].demand() == {"CPU": 1.0, "prm_node": 1.0}
    assert config.routing.spill_tokens == 1024
    assert config.failover.max_attempts == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"pools": {"gen": {"replicas": -1}}}, "pools.gen.replicas"),
        ({"pools": {"gen": {"kind": "fake", "gpus": 1}}}, "pools.gen.gpus: Extra inputs"),
        ({"pools": {"gen": {"resources": {"num_cpu": 2}}}}, "pools.gen.resources.num_cpu"),
        ({"pools": {"a": {}, "b": {}}}, "exactly one pool with role 'generator'"),
        ({"pools": {"a": {"role": "reward"}}}, "exactly one pool with role 'generator'"),
        ({"pools": {"gen": {"kind": "fake:1", "model": "x"}}}, "already names a model"),
        ({"pools": {"gen": {"options": {"worker_id": "x"}}}}, "set by the pool"),
        ({"pools": {"g en": {}}}, "letters, digits"),
        ({"pool": {}}, "pools: Field required"),
    ],
)
def test_bad_cluster_files_say_which_field(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_cluster_config(data)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_cluster_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pools: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_cluster_config(bad)


def test_tensor_parallel_pool_reserves_a_bundle_per_shard() -> None:
    spec = PoolSpec(
        kind="vllm",
        model="m",
        tensor_parallel_size=4,
        resources={"num_cpus": 2, "num_gpus": 1, "custom": {"a100": 1}},
    )
    assert spec.worker_spec == "vllm:m"
    assert spec.bundles() == [{"CPU": 2.0, "a100": 1.0}] + [{"GPU": 1.0}] * 4
    assert spec.demand() == {"CPU": 2.0, "a100": 1.0, "GPU": 4.0}
    assert PoolSpec().bundles() == []


NODES = [{"CPU": 4.0, "GPU": 2.0}, {"CPU": 2.0, "prm_node": 1.0}]


def pools(**specs: dict) -> dict[str, PoolSpec]:
    return {name: PoolSpec.model_validate(spec) for name, spec in specs.items()}


def test_placement_accepts_what_fits() -> None:
    fits = pools(
        gen={"replicas": 2, "resources": {"num_cpus": 1, "num_gpus": 1}},
        prm={"role": "reward", "resources": {"num_cpus": 1, "custom": {"prm_node": 1}}},
    )
    assert placement_problems(fits, NODES) == []
    assert ClusterConfig(pools=fits).generator_pool == "gen"


def test_placement_rejects_an_actor_no_node_can_hold() -> None:
    (problem,) = placement_problems(pools(gen={"resources": {"num_cpus": 8}}), NODES)
    assert "no node has that much" in problem and "CPU=8" in problem and "largest" in problem
    (problem,) = placement_problems(pools(gen={"resources": {"custom": {"tpu": 1}}}), NODES)
    assert "tpu=1" in problem


def test_placement_rejects_more_replicas_than_the_cluster_holds() -> None:
    (problem,) = placement_problems(pools(gen={"replicas": 3, "resources": {"num_gpus": 1}}), NODES)
    assert "cannot hold every replica" in problem and "GPU=3" in problem


@dataclass(eq=False)
class FakeLane:
    name: str
    capacity: int = 4
    in_flight: int = 0
    tokens: int = 0

    def take(self, tokens: int) -> FakeLane:
        self.in_flight += 1
        self.tokens += tokens
        return self


def test_router_prefers_fewest_in_flight_tokens_and_rotates_ties() -> None:
    router = Router()
    a, b, c = FakeLane("a", tokens=300), FakeLane("b", tokens=100), FakeLane("c", tokens=200)
    assert router.choose([a, b, c]) is b
    idle = [FakeLane("x"), FakeLane("y")]
    picks = {router.choose(idle).name for _ in range(4)}  # type: ignore[union-attr]
    assert picks == {"x", "y"}
    full = [FakeLane("f", capacity=1, in_flight=1)]
    assert router.choose(full) is None


def test_router_affinity_sticks_then_spills_when_owner_is_full_or_far_ahead() -> None:
    router = Router(spill_tokens=100)
    a, b = FakeLane("a", capacity=3), FakeLane("b", capacity=3)
    owner = router.choose([a, b], "fork-1", 50)
    assert owner is not None
    owner.take(50)
    other = b if owner is a else a
    # siblings follow the owner while it is within 100 tokens of the least loaded lane
    assert router.choose([a, b], "fork-1", 50) is owner
    owner.take(50)
    owner.take(50)  # 150 tokens ahead of the idle lane: overloaded
    assert router.choose([a, b], "fork-1", 50) is other
    assert router.spills == 1
    assert router.owner("fork-1") is owner  # the prefix still lives there
    owner.in_flight, owner.tokens = 3, 0
    assert router.choose([a, b], "fork-1", 50) is other  # full
    router.forget(owner)
    assert router.owner("fork-1") is None


def test_router_forgets_least_recent_keys() -> None:
    router = Router(max_keys=2)
    lane = FakeLane("a")
    for key in ("k1", "k2", "k3"):
        router.choose([lane], key)
    assert router.owner("k1") is None and router.owner("k3") is lane
