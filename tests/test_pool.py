"""LocalPool routing, concurrency bounds, failover and abort."""

from __future__ import annotations

import asyncio

import pytest

from threadloom import FakeWorker, GenerationRequest, SamplingParams, WorkerUnavailable
from threadloom.orchestrator.context import RunContext
from threadloom.types import ChatMessage, Problem
from threadloom.workers.pool import LocalPool


def req(key: str | None = None, rid: str | None = None) -> GenerationRequest:
    extra = {"request_id": rid} if rid else {}
    return GenerationRequest(
        messages=(ChatMessage(role="user", content="hi"),),
        params=SamplingParams(max_tokens=50),
        affinity_key=key,
        **extra,
    )


async def test_concurrency_is_bounded_per_worker() -> None:
    worker = FakeWorker(["a b c d"], token_delay_s=0.01)
    pool = LocalPool(worker, max_concurrency=2)
    peak = 0

    async def watch() -> None:
        nonlocal peak
        for _ in range(60):
            peak = max(peak, worker.in_flight)
            await asyncio.sleep(0.002)

    results = await asyncio.gather(watch(), *(pool.generate(req()) for _ in range(6)))
    assert all(c.text == "a b c d" for c in results[1:])
    assert peak == 2
    assert pool.usage.generations == 6
    assert pool.usage.completion_tokens == 24


async def test_least_loaded_and_affinity_routing() -> None:
    a, b = (
        FakeWorker(["x y"], worker_id="a", token_delay_s=0.01),
        FakeWorker(["x y"], worker_id="b", token_delay_s=0.01),
    )
    pool = LocalPool([a, b], max_concurrency=4)
    done = await asyncio.gather(*(pool.generate(req()) for _ in range(4)))
    assert {c.worker_id for c in done} == {"a", "b"}
    sticky = await asyncio.gather(*(pool.generate(req(key="prefix-1")) for _ in range(3)))
    assert len({c.worker_id for c in sticky}) == 1


class FlakyWorker(FakeWorker):
    async def stream(self, request):  # type: ignore[no-untyped-def, override]
        raise WorkerUnavailable("down for maintenance")
        yield  # pragma: no cover


async def test_failover_to_another_worker() -> None:
    pool = LocalPool([FlakyWorker(worker_id="flaky"), FakeWorker(["ok"], worker_id="good")])
    results = await asyncio.gather(*(pool.generate(req()) for _ in range(4)))
    assert {c.worker_id for c in results} == {"good"}
    with pytest.raises(WorkerUnavailable):
        await LocalPool(FlakyWorker()).generate(req())


async def test_abort_stops_a_running_request() -> None:
    worker = FakeWorker([" ".join(["tok"] * 200)], token_delay_s=0.005)
    pool = LocalPool(worker)
    task = asyncio.create_task(pool.generate(req(rid="r1")))
    await asyncio.sleep(0.05)
    assert await pool.abort("r1")
    completion = await task
    assert completion.finish_reason == "abort"
    assert completion.usage.completion_tokens < 50


async def test_cancelling_a_scope_aborts_its_generations() -> None:
    worker = FakeWorker([" ".join(["tok"] * 400)], token_delay_s=0.002)
    ctx = RunContext(Problem(prompt="go"), LocalPool(worker))
    child = ctx.fork()
    task = asyncio.create_task(child.sample(4, max_tokens=400))
    await asyncio.sleep(0.05)
    aborted = await ctx.cancel()
    candidates = await task
    assert aborted == 4
    assert all(c.finish_reason == "abort" for c in candidates)
    emitted = worker.tokens_emitted
    await asyncio.sleep(0.05)
    assert worker.tokens_emitted == emitted
    assert emitted < 4 * 400
