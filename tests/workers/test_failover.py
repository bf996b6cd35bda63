"""One failover test body for every pool: a local Pool of FakeWorkers and a RayPool.

A member dies mid-stream; the request continues on another member, the consumer sees one
coherent stream, tokens are counted once, and an abort reaches the member that holds the
request. The workers log what they are asked (request prefix and max_tokens, aborts) to a
file, so the same assertions read what happened inside Ray actors too.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from threadloom.types import ChatMessage, Completion, GenerationRequest, SamplingParams
from threadloom.workers.base import Worker
from threadloom.workers.pool import Pool

FULL = " ".join(f"w{i}" for i in range(30)) + " answer 42"
WORDS = FULL.split()


def logged_worker(log: Path, delay: float) -> Callable[[], Worker]:
    """A factory for FakeWorkers that continue FULL from their prefix and log to `log`.

    The class is built inside the factory so that Ray pickles it by value into its actors.
    `kill()` makes the worker die at its next token, as a crashed process would.
    """

    def build() -> Worker:
        import contextlib
        import json as jsonlib

        from threadloom.errors import WorkerDead
        from threadloom.workers.fake import FakeWorker

        full = " ".join(f"w{i}" for i in range(30)) + " answer 42"

        class Logged(FakeWorker):
            dead = False

            def kill(self) -> None:
                self.dead = True

            def note(self, **entry: Any) -> None:
                with open(log, "a") as out:
                    out.write(jsonlib.dumps({"worker": self.worker_id, **entry}) + "\n")

            async def stream(self, request: Any) -> Any:
                self.note(event="request", rid=request.request_id, prefix=request.prefix,
                          max_tokens=request.params.max_tokens)  # fmt: skip
                async with contextlib.aclosing(super().stream(request)) as deltas:
                    async for delta in deltas:
                        if self.dead:
                            raise WorkerDead(f"{self.worker_id} crashed")
                        yield delta

            async def abort(self, request_id: str) -> bool:
                running = await super().abort(request_id)
                if running:
                    self.note(event="abort", rid=request_id)
                return running

        return Logged(lambda request, _: full[len(request.prefix) :], token_delay_s=delay)

    return build


@dataclass
class Setup:
    """A pool of two logged workers and how to reach into its members."""

    pool: Any
    holder: Callable[[str], str | None]
    """The name of the member serving a request now."""
    kill: Callable[[str], None]
    """Make a member die mid-stream."""
    log: Path

    def events(self, event: str) -> list[dict[str, Any]]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [entry for entry in map(json.loads, lines) if entry["event"] == event]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local Ray cluster for the module's RayPools (started here, stopped at the end)."""
    from threadloom.workers.ray import cluster

    owned = cluster.connect(namespace="threadloom-failover-test", num_cpus=2)
    yield
    if owned:
        cluster.shutdown()


@pytest.fixture(params=["local", pytest.param("ray", marks=pytest.mark.ray)])
async def setup(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Setup]:
    log = tmp_path / "workers.jsonl"
    if request.param == "local":
        build = logged_worker(log, delay=0.005)
        members: dict[str, Any] = {}
        for name in ("local-0", "local-1"):
            worker = build()
            worker.worker_id = name
            members[name] = worker
        pool = Pool(list(members.values()), failover={"backoff_s": 0.0})

        def holder(request_id: str) -> str | None:
            worker = pool.holder(request_id)
            return None if worker is None else worker.worker_id

        async with pool:
            yield Setup(pool, holder, lambda name: members[name].kill(), log)
        return
    request.getfixturevalue("ray_cluster")
    import ray

    from threadloom.workers.ray.pool import RayPool

    ray_pool = RayPool(
        "fake",
        name="failover",
        replicas=2,
        resources={"num_cpus": 0.25},
        factory=logged_worker(log, delay=0.05),
        failover={"poll_wait_s": 0.2, "backoff_s": 0.0, "ready_timeout_s": 60.0},
        namespace="threadloom-failover-test",
    )
    async with ray_pool:
        await ray_pool.wait_ready()
        yield Setup(
            ray_pool,
            ray_pool.holder,
            lambda name: ray.kill(ray_pool.actor(name), no_restart=True),
            log,
        )


def chat(max_tokens: int) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage(role="user", content="go"),),
        params=SamplingParams(max_tokens=max_tokens),
    )


@pytest.mark.timeout(120)
async def test_a_member_that_dies_mid_stream_hands_the_request_over(setup: Setup) -> None:
    request = chat(max_tokens=20)
    rid = request.request_id
    texts: list[str] = []
    final: Completion | None = None
    victim = None
    async for delta in setup.pool.stream(request):
        if delta.completion is not None:
            final = delta.completion
        elif delta.text:
            texts.append(delta.text)
            if len(texts) == 5:
                victim = setup.holder(rid)
                assert victim is not None
                setup.kill(victim)
    assert final is not None
    # one coherent stream: no text lost or repeated across the failover
    assert final.text == "".join(texts) == " ".join(WORDS[:20])
    assert final.finish_reason == "length" and final.usage.completion_tokens == 20
    assert final.attempts == 2 and final.failed_workers == (victim,)
    assert final.worker_id != victim
    assert setup.pool.usage.completion_tokens == 20 and setup.pool.usage.generations == 1
    # the survivor continued the delivered text with the tokens left, counted once
    first, second = [e for e in setup.events("request") if e["rid"] == rid]
    assert first["worker"] == victim and first["prefix"] == "" and first["max_tokens"] == 20
    spent = len(second["prefix"].split())
    assert second["worker"] != victim and spent >= 5
    assert second["prefix"] == " ".join(WORDS[:spent]) and second["max_tokens"] == 20 - spent


@pytest.mark.timeout(120)
async def test_an_abort_reaches_the_member_that_holds_the_request(setup: Setup) -> None:
    request = chat(max_tokens=len(WORDS))
    rid = request.request_id
    texts: list[str] = []
    final: Completion | None = None
    victim = survivor = None
    async for delta in setup.pool.stream(request):
        if delta.completion is not None:
            final = delta.completion
            continue
        if not delta.text:
            continue
        texts.append(delta.text)
        if len(texts) == 3:
            victim = setup.holder(rid)
            assert victim is not None
            setup.kill(victim)
        elif survivor is None and victim is not None and setup.holder(rid) not in (None, victim):
            survivor = setup.holder(rid)
            assert await setup.pool.abort(rid)
    assert final is not None and survivor is not None
    assert final.finish_reason == "abort" and final.attempts == 2
    assert final.text == "".join(texts) and FULL.startswith(final.text)
    assert len(final.text.split()) < len(WORDS)
    assert final.usage.completion_tokens == len(final.text.split())  # counted once
    assert [(e["worker"], e["rid"]) for e in setup.events("abort")] == [(survivor, rid)]
    assert not await setup.pool.abort(rid)  # finished: nothing left to stop
