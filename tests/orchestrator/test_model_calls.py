"""One model call through the run context, judged by its effect on the worker and the trace:
the worker's stream runs to its end, each generation is one trace update, and cancelling a
scope reaches every worker even when the caller of `cancel` is cancelled itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import threadloom as tl
from threadloom import FakeWorker, Problem
from threadloom.errors import ConfigError
from threadloom.orchestrator.arguments import check_worker
from threadloom.orchestrator.context import RunContext
from threadloom.orchestrator.events import TraceEvent, UpdateEvent
from threadloom.types import Budget, Candidate, GenerationRequest, SamplingParams, Score
from threadloom.workers.base import StreamDelta, WorkerCapabilities
from threadloom.workers.wrappers import ConcurrencyLimited

Q = Problem(prompt="What is 6 * 7?", answer_format="number")
LONG = " ".join(f"w{i}" for i in range(30))


class EndsAfterFinal(FakeWorker):
    """Does some bookkeeping after its final delta, as a backend that releases a slot would."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.ended: list[str] = []

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        async for delta in super().stream(request):
            yield delta
        self.ended.append(request.request_id)


class TalksPastFinal(FakeWorker):
    """Breaks the protocol: yields more text after the delta that carries its Completion."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.closed_early: list[str] = []

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        try:
            async for delta in super().stream(request):
                yield delta
            yield StreamDelta(text=" extra", tokens=1)
            yield StreamDelta(text=" more", tokens=1)
        except GeneratorExit:
            self.closed_early.append(request.request_id)
            raise


class SlowAbort(FakeWorker):
    """Takes a while to acknowledge an abort, like a remote server."""

    async def abort(self, request_id: str) -> bool:
        await asyncio.sleep(0.05)
        return await super().abort(request_id)


async def test_the_worker_stream_runs_to_its_end_after_the_final_delta() -> None:
    worker = EndsAfterFinal(["The answer is 42"])
    ctx = RunContext(Q, worker)
    request = ctx.request()
    completion, _ = await ctx.generate(request)
    assert completion.text == "The answer is 42"
    assert worker.ended == [request.request_id]  # before generate returned, not at a later GC

    streamed = ctx.request()
    async for _ in ctx.stream(streamed):
        pass
    assert worker.ended[-1] == streamed.request_id


async def test_a_limited_workers_slot_is_free_when_generate_returns() -> None:
    worker = ConcurrencyLimited(FakeWorker(["The answer is 42"]), 1)
    ctx = RunContext(Q, worker)
    await ctx.generate(ctx.request())
    assert worker.in_flight == 0  # given back by the wrapper's stream, not at a later GC
    candidates = await ctx.sample(3)
    assert worker.in_flight == 0 and len(candidates) == 3


async def test_a_stream_that_talks_past_its_final_delta_is_closed_and_the_extra_dropped() -> None:
    worker = TalksPastFinal(["The answer is 42"])
    ctx = RunContext(Q, worker)
    request = ctx.request()
    completion, node = await ctx.generate(request)
    assert completion.text == "The answer is 42"
    assert worker.closed_early == [request.request_id]
    assert ctx.trace.graph.nodes[node]["data"]["text"] == "The answer is 42"
    assert ctx.usage.completion_tokens == 4


async def test_each_generation_is_one_trace_update_holding_its_cut() -> None:
    events: list[TraceEvent] = []
    worker = FakeWorker([LONG], honours_max_tokens=False)
    result = await tl.arun(
        Q, "best-of-n", n=3, worker=worker, params=SamplingParams(max_tokens=5),
        on_event=events.append,
    )
    generations = [n.id for n in result.trace.nodes if n.kind == "generation"]
    assert len(generations) == 3
    for node in generations:
        updates = [e for e in events if isinstance(e, UpdateEvent) and e.id == node]
        assert len(updates) == 1
        data = updates[0].data
        assert data["finish_reason"] == "length"
        assert data["completion_tokens"] == 5
        assert data["discarded_tokens"] >= 1
    assert result.usage.completion_tokens == 15


async def test_cancelling_an_idle_scope_returns_without_suspending() -> None:
    ctx = RunContext(Q, FakeWorker())
    child = ctx.fork()
    grandchild = child.fork()
    pending = ctx.cancel()
    with pytest.raises(StopIteration) as done:
        pending.send(None)
    assert done.value.value == 0
    assert ctx.cancelled and child.cancelled and grandchild.cancelled


async def test_cancel_reaches_every_worker_even_when_its_caller_is_cancelled() -> None:
    worker = SlowAbort([LONG], token_delay_s=0.02)
    ctx = RunContext(Q, worker)
    child = ctx.fork()
    running = [
        asyncio.create_task(scope.generate(scope.request())) for scope in (ctx, child, child)
    ]
    while worker.in_flight < 3:
        await asyncio.sleep(0.01)
    canceller = asyncio.create_task(ctx.cancel())
    await asyncio.sleep(0)
    canceller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await canceller
    finished = await asyncio.gather(*running)
    assert len(worker.aborted) == 3
    assert all(completion.finish_reason == "abort" for completion, _ in finished)
    assert worker.in_flight == 0
    assert ctx.cancelled and child.cancelled
    assert await child.sample(1) == []


async def test_a_scope_draws_the_same_seeds_for_the_same_run_seed() -> None:
    seeds = []
    for _ in range(2):
        worker = FakeWorker()
        ctx = RunContext(Q, worker, seed=11)
        child = ctx.fork()
        await ctx.sample(2)
        await child.sample(2)
        seeds.append([r.params.seed for r in worker.requests])
    assert seeds[0] == seeds[1]
    assert len(set(seeds[0])) == 4


class TimesOut:
    """A verifier whose own time limit runs out on every candidate."""

    name = "times-out"

    async def score(self, problem: Problem, candidate: Candidate) -> Score:
        raise TimeoutError("took too long")


@pytest.mark.parametrize("budget", [None, Budget(max_wall_time_s=30)])
async def test_a_verifiers_own_timeout_scores_as_failed_with_or_without_a_deadline(
    budget: Budget | None,
) -> None:
    judge = TimesOut()
    ctx = RunContext(Q, FakeWorker(), verifiers={judge.name: judge}, budget=budget)
    [candidate] = await ctx.sample(1)
    score = await ctx.score(candidate, judge.name)
    assert score is not None and score.passed is False
    assert "TimeoutError" in score.detail
    assert not ctx.truncated


class CountsCapabilityReads(FakeWorker):
    reads = 0

    @property
    def capabilities(self) -> WorkerCapabilities:
        type(self).reads += 1
        return super().capabilities


def test_a_worker_argument_is_checked_without_reading_its_properties() -> None:
    check_worker(CountsCapabilityReads())
    assert CountsCapabilityReads.reads == 0

    class NoAbort:
        worker_id = "x"
        capabilities = WorkerCapabilities()

        async def generate(self) -> None: ...
        def stream(self) -> None: ...
        async def close(self) -> None: ...

    with pytest.raises(ConfigError, match=r"NoAbort, which has no abort$"):
        check_worker(NoAbort())
