"""RayPool on a two-node Ray cluster simulated on this machine (ray.cluster_utils.Cluster).

Most actors hold FakeWorkers (cheap); one holds the real embedded llama.cpp model.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster
from typer.testing import CliRunner

from threadloom import GenerationRequest, Problem, SamplingParams, WorkerUnavailable, arun
from threadloom.errors import ConfigError, WorkerDead
from threadloom.evaluation.bench import Verifiers, run_bench
from threadloom.evaluation.records import ResultLog
from threadloom.orchestrator.context import RunContext
from threadloom.strategies.registry import make_strategy
from threadloom.types import ChatMessage
from threadloom.workers.ray.cluster import RayCluster
from threadloom.workers.ray.pool import RayPool

pytestmark = pytest.mark.ray

NAMESPACE = "threadloom-test"
FULL = " ".join(f"w{i}" for i in range(30)) + " answer 42"
FAST = {"poll_wait_s": 0.2, "backoff_s": 0.0, "ready_timeout_s": 30.0}


def descendants(roots: list[int]) -> set[int]:
    """The processes in `roots` and every process below them (read from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found = {pid for pid in roots if pid in parents}
    grew = True
    while grew:
        below = {pid for pid, parent in parents.items() if parent in found} - found
        found |= below
        grew = bool(below)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids: set[int], timeout_s: float) -> set[int]:
    """The pids still running after waiting up to `timeout_s` for them to exit."""
    deadline = time.monotonic() + timeout_s
    left = {pid for pid in pids if alive(pid)}
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = {pid for pid in left if alive(pid)}
    return left


def chat(**params: Any) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage(role="user", content="go"),), params=SamplingParams(**params)
    )


async def test_a_pool_that_started_ray_leaves_no_process_behind() -> None:
    # runs first, before the module's cluster exists
    assert not ray.is_initialized()
    pool = RayPool("fake:hi", resources={"num_cpus": 0.25}, namespace=NAMESPACE)
    try:
        node = ray._private.worker._global_node
        roots = [p.process.pid for ps in node.all_processes.values() for p in ps]
        assert (await pool.generate(chat())).text == "hi"
        pids = descendants(roots)
        assert len(pids) > len(roots)  # the actor's worker process is among them
    finally:
        await pool.close()
    assert not ray.is_initialized()
    assert not wait_gone(pids, timeout_s=20), "Ray processes left behind"


def test_an_unreachable_address_fails_fast() -> None:
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="nothing answers at Ray address"):
        RayPool("fake", address="127.0.0.1:1")
    assert time.perf_counter() - started < 10 and not ray.is_initialized()


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, str]]:
    """Two nodes: 'head' (2 CPUs, slot, head_node) and 'edge' (2 CPUs, slot, edge_node)."""
    sim = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "resources": {"slot": 1, "head_node": 1}},
    )
    sim.add_node(num_cpus=2, resources={"slot": 1, "edge_node": 1})
    ray.init(address=sim.address, namespace=NAMESPACE)
    sim.wait_for_nodes()
    nodes = {}
    for node in ray.nodes():
        name = "head" if "head_node" in node["Resources"] else "edge"
        nodes[name] = node["NodeID"]
    roots = [p.process.pid for n in sim.list_all_nodes() for ps in n.all_processes.values()
             for p in ps]  # fmt: skip
    nodes["address"] = sim.address
    yield nodes
    ray.shutdown()
    sim.shutdown()
    left = wait_gone(descendants(roots), timeout_s=20)
    assert not left, f"Ray processes left behind: {left}"


def resuming_worker(delay: float = 0.02) -> Any:
    """A factory for FakeWorkers that continue FULL from whatever prefix they are given."""

    def build() -> Any:
        from threadloom.workers.fake import FakeWorker

        return FakeWorker(lambda request, _: FULL[len(request.prefix) :], token_delay_s=delay)

    return build


def generation_nodes(result: Any) -> list[dict[str, Any]]:
    return [node.data for node in result.trace.nodes if node.kind == "generation"]


async def test_actors_land_on_their_nodes_and_best_of_n_spans_both(
    cluster: dict[str, str],
) -> None:
    config = {
        "ray": {"namespace": NAMESPACE},
        "pools": {
            "gen": {
                "kind": "fake:The answer is 42",
                "replicas": 2,
                "resources": {"num_cpus": 0.5, "custom": {"slot": 1}},
            },
            "prm": {
                "role": "reward",
                "kind": "fake:0.9",
                "resources": {"num_cpus": 0.25, "custom": {"edge_node": 1}},
            },
        },
    }
    from threadloom.workers.ray.config import load_cluster_config

    pools = RayCluster(load_cluster_config(config))
    try:
        await pools.wait_ready()
        where = {entry["worker_id"]: entry["node_id"] for entry in await pools.describe()}
        gen = [lane["worker_id"] for lane in pools.generator.lanes]
        assert {where[name] for name in gen} == {cluster["head"], cluster["edge"]}
        (prm,) = [lane["worker_id"] for lane in pools.reward.lanes]
        assert where[prm] == cluster["edge"]
        result = await arun("What is 6*7?", "best-of-n", n=8, worker=pools, verifier="numeric")
        assert len(result.candidates) == 8 and result.answer == "42"
        assert {data["worker"] for data in generation_nodes(result)} == set(gen)
        assert pools.usage.generations == 8
    finally:
        await pools.close()
    assert not [a for a in ray.util.list_named_actors(True) if a["namespace"] == NAMESPACE]


async def test_generator_and_reward_pools_scale_independently(cluster: dict[str, str]) -> None:
    from threadloom.workers.ray.config import load_cluster_config

    small = {"num_cpus": 0.25}
    config = {
        "ray": {"namespace": NAMESPACE},
        "pools": {
            "gen": {"kind": "fake:a b", "resources": small},
            "prm": {"role": "reward", "kind": "fake:0.5", "replicas": 2, "resources": small},
        },
    }
    pools = RayCluster(load_cluster_config(config))
    try:
        await pools.wait_ready()
        await pools.generator.scale(3)
        await pools.reward.scale(1)
        assert len(pools.generator.lanes) == 3 and len(pools.reward.lanes) == 1
        done = await asyncio.gather(*(pools.generate(chat()) for _ in range(9)))
        assert len({c.worker_id for c in done}) == 3  # least-loaded spreads over all three
        await pools.generator.scale(1)
        assert [lane["state"] for lane in pools.generator.lanes] == ["ready"]
    finally:
        await pools.close()


async def test_resources_are_checked_before_placing(cluster: dict[str, str]) -> None:
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="no node has that much"):
        RayPool("fake", resources={"num_cpus": 64})
    with pytest.raises(ConfigError, match="tpu=1"):
        RayPool("fake", resources={"custom": {"tpu": 1}})
    with pytest.raises(ConfigError, match="cannot hold every replica"):
        RayPool("fake", replicas=3, resources={"num_cpus": 0.1, "custom": {"slot": 1}})
    assert time.perf_counter() - started < 5
    # feasible, but another pool holds both slots: fail after the timeout, not hang
    holder = RayPool(
        "fake", name="holder", replicas=2, resources={"num_cpus": 0.1, "custom": {"slot": 1}}
    )
    try:
        await holder.wait_ready()
        late = RayPool(
            "fake",
            name="late",
            resources={"num_cpus": 0.1, "custom": {"slot": 1}},
            failover={"ready_timeout_s": 1.5},
        )
        with pytest.raises(WorkerUnavailable, match=r"was not placed within 1\.5 s"):
            await late.generate(chat())
        await late.close()
    finally:
        await holder.close()
    assert not [a for a in ray.util.list_named_actors(True) if a["namespace"] == NAMESPACE]


async def test_killed_actor_mid_run_loses_no_candidate(cluster: dict[str, str]) -> None:
    pool = RayPool(
        "fake",
        replicas=2,
        resources={"num_cpus": 0.5},
        factory=resuming_worker(),
        failover=FAST,
    )
    try:
        await pool.wait_ready()
        victim = pool.lanes[0]["worker_id"]

        async def kill_soon() -> None:
            await asyncio.sleep(0.3)
            ray.kill(pool.actor(victim), no_restart=False)

        result, _ = await asyncio.gather(arun("go", "best-of-n", n=6, worker=pool), kill_soon())
        assert len(result.candidates) == 6
        assert all(c.text == FULL and c.finish_reason == "stop" for c in result.candidates)
        assert len({c.node_id for c in result.candidates}) == 6
        retried = [d for d in generation_nodes(result) if d.get("attempts", 1) > 1]
        assert retried, "the trace should show the failover"
        assert all(d["failed_workers"] == [victim] and d["worker"] != victim for d in retried)
        assert all(d["completion_tokens"] == len(FULL.split()) for d in retried)
        assert pool.failovers >= len(retried)
        # Ray restarts the actor and the pool routes to it again
        for _ in range(100):
            if pool.lanes[0]["state"] == "ready":
                break
            await asyncio.sleep(0.1)
        entry = next(e for e in await pool.describe() if e["worker_id"] == victim)
        assert entry["state"] == "ready" and entry["restarted"]
    finally:
        await pool.close()


def chunky_worker(marker: Path, *, continues_prefix: bool) -> Any:
    """A factory for workers that stream several tokens a delta and say how many.

    The first request of the pool (the worker that creates `marker` serves it) streams three
    deltas of 2, 2 and 3 tokens and then hangs until its actor is killed. Every other request
    streams one token a delta up to its max_tokens, and its reply names what it was asked.
    """

    def build() -> Any:
        import asyncio as aio

        from threadloom.types import Completion, TokenUsage
        from threadloom.workers.base import StreamDelta, WorkerCapabilities

        class Chunky:
            worker_id = "chunky"

            def __init__(self) -> None:
                self.capabilities = WorkerCapabilities(
                    max_batch=4, continues_prefix=continues_prefix
                )

            async def stream(self, request: Any) -> Any:
                limit = request.params.max_tokens
                try:
                    marker.touch(exist_ok=False)
                    first = True
                except FileExistsError:
                    first = False
                if first:
                    for text, tokens in (("t1 t2 ", 2), ("t3 t4 ", 2), ("t5 t6 t7 ", 3)):
                        yield StreamDelta(text=text, tokens=tokens)
                    await aio.sleep(3600)  # hangs: the test kills this actor
                sent = [f"r{i} " for i in range(1, 21)][:limit]
                sent[0] = f"[prefix={len(request.prefix)} max={limit}] " + sent[0]
                for text in sent:
                    await aio.sleep(0.01)
                    yield StreamDelta(text=text, tokens=1)
                yield StreamDelta(
                    text="",
                    completion=Completion(
                        text="".join(sent),
                        finish_reason="length" if len(sent) == limit else "stop",
                        usage=TokenUsage(prompt_tokens=3, completion_tokens=len(sent)),
                        worker_id=self.worker_id,
                        request_id=request.request_id,
                    ),
                )

            async def generate(self, request: Any) -> Any:
                raise NotImplementedError

            async def abort(self, request_id: str) -> bool:
                return False

            async def close(self) -> None:
                pass

        return Chunky()

    return build


def chunky_pool(name: str, marker: Path, *, continues_prefix: bool) -> RayPool:
    """Two actors of `chunky_worker`s."""
    return RayPool(
        "fake",
        name=name,
        replicas=2,
        resources={"num_cpus": 0.25},
        factory=chunky_worker(marker, continues_prefix=continues_prefix),
        failover=FAST,
    )


async def fail_over_after_three_deltas(pool: RayPool, max_tokens: int) -> tuple[Any, list[str]]:
    """Stream a request, kill its actor once three deltas arrived; the deltas and the end."""
    request = chat(max_tokens=max_tokens)
    texts: list[str] = []
    final = None
    async for delta in pool.stream(request):
        if delta.completion is not None:
            final = delta.completion
        elif delta.text:
            texts.append(delta.text)
            if len(texts) == 3:
                busy = next(lane for lane in pool.lanes if lane["in_flight"])
                ray.kill(pool.actor(busy["worker_id"]), no_restart=True)
    return final, texts


@pytest.mark.timeout(180)
async def test_failover_resumes_within_max_tokens_by_real_token_counts(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    # review case: three deltas carrying seven tokens, then the actor dies; max_tokens=10
    pool = chunky_pool("chunky", tmp_path / "served", continues_prefix=True)
    try:
        await pool.wait_ready()
        final, texts = await fail_over_after_three_deltas(pool, max_tokens=10)
        assert final is not None and final.attempts == 2
        prefix = "t1 t2 t3 t4 t5 t6 t7 "
        # the second worker was asked to continue the seven tokens with the three left
        assert final.text == prefix + f"[prefix={len(prefix)} max=3] r1 r2 r3 "
        assert "".join(texts) == final.text
        assert final.usage.completion_tokens == 10 and final.finish_reason == "length"
        (survivor,) = [e for e in await pool.describe() if "error" not in e]
        assert survivor["completion_tokens"] == 3  # decoded on the worker: no more than three
    finally:
        await pool.close()


@pytest.mark.timeout(180)
async def test_failover_restarts_a_worker_that_cannot_continue_a_prefix(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    pool = chunky_pool("restart", tmp_path / "served", continues_prefix=False)
    try:
        await pool.wait_ready()
        final, texts = await fail_over_after_three_deltas(pool, max_tokens=5)
        assert final is not None and final.attempts == 2
        # asked again from scratch, with the whole max_tokens; none of the first text kept
        assert final.text == "[prefix=0 max=5] r1 r2 r3 r4 r5 "
        assert final.usage.completion_tokens == 5
        assert "".join(texts[3:]) == final.text  # the stream started over after three deltas
    finally:
        await pool.close()


@pytest.mark.timeout(180)
async def test_an_abort_sent_while_the_request_opens_is_not_lost(
    cluster: dict[str, str],
) -> None:
    pool = RayPool(
        "fake:" + " ".join(["tok"] * 200),
        name="early",
        resources={"num_cpus": 0.25},
        options={"token_delay_s": 0.02},
        failover=FAST,
    )
    try:
        await pool.wait_ready()
        for _ in range(3):
            request = chat(max_tokens=200)
            task = asyncio.create_task(pool.generate(request))
            for _ in range(3):  # far enough for the request to be on its way to the actor
                await asyncio.sleep(0)
            assert await pool.abort(request.request_id)
            aborted = await asyncio.wait_for(task, 30)
            assert aborted.finish_reason == "abort"
        (entry,) = await pool.describe()
        assert entry["in_flight"] == 0
        assert entry["completion_tokens"] < 100  # the three requests stopped early, not 600
    finally:
        await pool.close()


async def test_unanswered_call_times_out_and_fails_over(cluster: dict[str, str]) -> None:
    def build() -> Any:
        import time as clock

        import ray as ray_in_actor

        from threadloom.workers.fake import FakeWorker

        stuck = ray_in_actor.get_runtime_context().get_actor_name().startswith("stuck-0")

        def reply(request: Any, index: int) -> str:
            if stuck:
                clock.sleep(1.5)  # blocks the actor's event loop: calls go unanswered
            return "ok fine"

        return FakeWorker(reply)

    pool = RayPool(
        "fake",
        name="stuck",
        replicas=2,
        resources={"num_cpus": 0.25},
        factory=build,
        failover={**FAST, "call_timeout_s": 0.4},
    )
    try:
        await pool.wait_ready()
        done = await asyncio.gather(*(pool.generate(chat()) for _ in range(4)))
        assert all(c.text == "ok fine" for c in done)
        moved = [c for c in done if c.attempts > 1]
        assert moved and all(c.failed_workers[0].startswith("stuck-0") for c in moved)
    finally:
        await pool.close()


async def test_siblings_share_a_worker_and_spill_when_it_is_full(cluster: dict[str, str]) -> None:
    pool = RayPool(
        "fake:a b c d e f",
        replicas=2,
        resources={"num_cpus": 0.25},
        options={"token_delay_s": 0.05},
        max_concurrency=2,
        routing={"spill_tokens": None},
        failover=FAST,
    )
    try:
        await pool.wait_ready()
        ctx = RunContext(Problem(prompt="go"), pool)

        async def siblings(key: str, count: int) -> list[str]:
            pairs = await asyncio.gather(
                *(ctx.generate(ctx.request(affinity_key=key, max_tokens=8)) for _ in range(count))
            )
            return [node for _, node in pairs]

        nodes = await siblings("fork-1", 2)
        workers = [ctx.trace.graph.nodes[n]["data"]["worker"] for n in nodes]
        assert len(set(workers)) == 1  # same prefix, same worker
        owner = workers[0]
        nodes = await siblings("fork-1", 4)  # the owner has 2 slots: two spill
        workers = [ctx.trace.graph.nodes[n]["data"]["worker"] for n in nodes]
        assert workers.count(owner) == 2 and len(set(workers)) == 2
        assert pool.router.spills == 2
    finally:
        await pool.close()


async def test_streaming_and_abort_cross_the_actor_boundary(cluster: dict[str, str]) -> None:
    pool = RayPool(
        "fake:" + " ".join(["tok"] * 300),
        resources={"num_cpus": 0.25},
        options={"token_delay_s": 0.01},
        failover=FAST,
    )
    try:
        stamps, texts = [], []
        async for delta in pool.stream(chat(max_tokens=20)):
            stamps.append(time.perf_counter())
            texts.append(delta.text)
            final = delta.completion
        assert final is not None and "".join(texts) == final.text
        assert final.usage.completion_tokens == 20 and len(texts) > 2
        assert stamps[-1] - stamps[0] > 0.05  # deltas arrive as they are decoded (0.2 s)
        request = chat(max_tokens=300)
        task = asyncio.create_task(pool.generate(request))
        await asyncio.sleep(0.5)
        assert await pool.abort(request.request_id)
        aborted = await task
        assert aborted.finish_reason == "abort" and aborted.usage.completion_tokens < 200
        # a consumer that goes away stops the request on the actor too
        task = asyncio.create_task(pool.generate(chat(max_tokens=300)))
        await asyncio.sleep(0.5)
        task.cancel()
        await asyncio.sleep(0.3)
        (entry,) = await pool.describe()
        assert entry["in_flight"] == 0 and entry["routed_in_flight"] == 0
        # closing the pool ends what still runs with WorkerDead instead of leaving it hanging
        task = asyncio.create_task(pool.generate(chat(max_tokens=300)))
        await asyncio.sleep(0.5)
        await pool.close()
        with pytest.raises(WorkerDead, match="was closed"):
            await asyncio.wait_for(task, 10)
    finally:
        await pool.close()


async def test_bench_runs_on_a_pool_with_backpressure_and_resumes(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    def build() -> Any:
        from threadloom.workers.fake import FakeWorker

        def reply(request: Any, index: int) -> str:
            a = int(request.messages[-1].content.split()[2])
            return f"The answer is {2 * a}"

        return FakeWorker(reply, token_delay_s=0.005)

    problems = [
        Problem(prompt=f"What is {i} + {i}?", reference=str(2 * i), id=f"p{i}",
                answer_format="number", metadata={"verifier": "numeric"})
        for i in range(1, 7)
    ]  # fmt: skip
    pool = RayPool("fake", replicas=2, resources={"num_cpus": 0.25}, factory=build,
                   max_concurrency=2, failover=FAST)  # fmt: skip
    log = ResultLog(tmp_path / "bench.jsonl")
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max([peak] + [lane["in_flight"] for lane in pool.lanes])
            await asyncio.sleep(0.002)

    try:
        watcher = asyncio.create_task(watch())
        strategies = [make_strategy("best-of-n:n=3")]
        records = await run_bench(problems, strategies, pool, log, dataset="toy",
                                  verifiers=Verifiers(selection="none"), concurrency=6)  # fmt: skip
        watcher.cancel()
        assert len(records) == 6 and all(r.correct and r.error is None for r in records)
        assert peak == 2  # 18 generations wanted at once; each actor held 2
        again = await run_bench(problems, strategies, pool, log, dataset="toy",
                                verifiers=Verifiers(selection="none"))  # fmt: skip
        assert again == [] and len(log.read()) == 6
    finally:
        await pool.close()


def test_cli_shows_actors_and_runs_from_a_cluster_file(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    from threadloom.cli.application import app

    path = tmp_path / "cluster.yaml"
    path.write_text(
        f"ray: {{namespace: {NAMESPACE}}}\n"
        "pools:\n  gen:\n    kind: 'fake:The answer is 7'\n    replicas: 2\n"
        "    resources: {num_cpus: 0.25}\n"
    )
    runner = CliRunner()
    shown = runner.invoke(
        app, ["workers", "--ray-address", cluster["address"], "--workers", str(path)]
    )
    assert shown.exit_code == 0, shown.output
    assert "every pool fits" in shown.output and "nodes" in shown.output
    ran = runner.invoke(app, ["run", "q", "--workers", str(path), "-n", "3", "--json"])
    assert ran.exit_code == 0, ran.output
    payload = json.loads(ran.output[ran.output.index("{") :])
    assert payload["answer"] == "7" and len(payload["candidates"]) == 3
    assert ray.is_initialized()  # the run joined the test's Ray; it did not shut it down
    assert not [a for a in ray.util.list_named_actors(True) if a["namespace"] == NAMESPACE]


@pytest.mark.slow
async def test_embedded_model_in_an_actor(cluster: dict[str, str]) -> None:
    pool = RayPool(
        "llamacpp",
        resources={"num_cpus": 1, "custom": {"edge_node": 1}},
        options={"n_slots": 4},
    )
    try:
        deltas = []
        request = chat(max_tokens=12, temperature=0.0)
        async for delta in pool.stream(request):
            deltas.append(delta)
        final = deltas[-1].completion
        assert final is not None and final.text.strip()
        assert final.usage.completion_tokens > 0 and len(deltas) > 2
        (entry,) = await pool.describe()
        assert entry["node_id"] == cluster["edge"]
        assert "SmolLM2" in entry["capabilities"]["model"]
        assert pool.capabilities.prefix_caching
    finally:
        await pool.close()


async def test_tensor_parallel_pool_gets_a_placement_group(cluster: dict[str, str]) -> None:
    def build() -> Any:
        from threadloom.workers.fake import FakeWorker

        return FakeWorker(["sharded"])

    pool = RayPool("fake", resources={"num_cpus": 0.25}, tensor_parallel_size=2, factory=build)
    try:
        assert (await pool.generate(chat())).text == "sharded"
        (entry,) = await pool.describe()
        assert entry["placement_group"]
    finally:
        await pool.close()
    # the fake worker takes no tensor_parallel_size: a start-up error, named, not a hang
    broken = RayPool("fake", resources={"num_cpus": 0.25}, tensor_parallel_size=2)
    with pytest.raises(ConfigError, match="could not start"):
        await broken.wait_ready()
    await broken.close()
