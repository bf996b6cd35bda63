"""Pool (LocalPool) routing, concurrency bounds, failover and abort on in-process workers.

The failover of a member that dies mid-stream is tested once for every pool in
tests/workers/test_failover.py.
"""

from __future__ import annotations

import asyncio

import pytest
from failing_workers import Breaking, NewTurnWorker

from threadloom import FakeWorker, GenerationRequest, SamplingParams, WorkerUnavailable
from threadloom.errors import WorkerDead
from threadloom.orchestrator.context import RunContext
from threadloom.types import ChatMessage, Problem
from threadloom.workers.pool import LocalPool, Pool


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


async def test_an_aborted_queued_request_never_reaches_a_member() -> None:
    worker = FakeWorker([" ".join(["tok"] * 100)], token_delay_s=0.005)
    pool = Pool(worker, max_concurrency=1)
    running, queued = req(rid="running"), req(rid="queued")
    first = asyncio.create_task(pool.generate(running))
    second = asyncio.create_task(pool.generate(queued))
    await asyncio.sleep(0.05)
    assert pool.holder("queued") is None and pool.holder("running") is worker
    assert await pool.abort("queued")
    aborted = await asyncio.wait_for(second, 5)
    assert aborted.finish_reason == "abort" and aborted.worker_id == pool.worker_id
    assert await pool.abort("running")
    assert (await first).finish_reason == "abort"
    assert [r.request_id for r in worker.requests] == ["running"]
    assert worker.aborted == ["running"]
    assert not await pool.abort("queued")  # finished: the pool no longer knows it


async def test_a_consumer_that_leaves_frees_its_slot_and_stops_the_member() -> None:
    worker = FakeWorker([" ".join(["tok"] * 300)], token_delay_s=0.005)
    pool = Pool(worker, max_concurrency=1)
    stream = pool.stream(req())
    async for delta in stream:
        if delta.text:
            break
    await stream.aclose()
    (member,) = pool.members
    assert member.in_flight == 0 and member.tokens == 0 and worker.in_flight == 0
    emitted = worker.tokens_emitted
    await asyncio.sleep(0.05)
    assert worker.tokens_emitted == emitted  # nothing decoded for the consumer that left
    assert (await pool.generate(req())).finish_reason == "length"  # the slot is free again


async def test_a_dead_member_leaves_routing_and_the_pool_says_when_none_is_left() -> None:
    dead = Breaking(worker_id="dead")
    dead.kill()
    good = Breaking(worker_id="good")
    pool = Pool([dead, good], failover={"backoff_s": 0.0})
    done = await asyncio.gather(*(pool.generate(req()) for _ in range(4)))
    assert {c.worker_id for c in done} == {"good"}
    assert [m.state for m in pool.members] == ["dead", "ready"]
    assert len(dead.requests) == 1  # tried once, then out of routing
    good.kill()
    with pytest.raises(WorkerUnavailable, match="no live worker"):
        await pool.generate(req())


async def test_a_member_that_cannot_continue_a_prefix_starts_the_request_over() -> None:
    broken = Breaking(breaks=[3], worker_id="broken")
    restarts = NewTurnWorker(["fresh answer"], worker_id="new-turn")
    pool = Pool([broken, restarts], failover={"backoff_s": 0.0})
    pool.router.choose(list(pool.members))  # the next choice rotates to `broken` first
    texts = []
    final = None
    async for delta in pool.stream(req()):
        texts.append(delta.text)
        final = delta.completion or final
    assert final is not None and final.text == "fresh answer" and final.attempts == 2
    assert restarts.requests[0].prefix == ""  # asked from scratch with the whole budget
    assert restarts.requests[0].params.max_tokens == 50
    assert final.usage.completion_tokens == 2  # the abandoned text no longer counts


async def test_pools_close_their_members_and_local_pool_is_the_same_class() -> None:
    worker = FakeWorker(["ok"])
    async with Pool([worker]) as pool:
        assert (await pool.generate(req())).text == "ok"
    with pytest.raises(WorkerDead):
        await worker.generate(req())
    with pytest.raises(WorkerDead):
        await pool.generate(req())
    assert LocalPool is Pool


async def test_a_break_after_the_last_allowed_token_ends_with_length() -> None:
    pool = Pool([Breaking(breaks=[5], worker_id=f"w{i}") for i in range(2)])
    request = GenerationRequest(
        messages=(ChatMessage(role="user", content="hi"),), params=SamplingParams(max_tokens=5)
    )
    final = await pool.generate(request)
    assert final.finish_reason == "length" and len(final.text.split()) == 5
    assert final.usage.completion_tokens == 5 and final.attempts == 2
    assert sum(len(m.requests) for m in pool.workers) == 1  # nobody was asked for 0 tokens
