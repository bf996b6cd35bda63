"""Budgets and cancellation, judged by their effect on the worker: what it decoded, what is
still running on it, and how long the run took past its deadline."""

from __future__ import annotations

import asyncio
import time

import pytest

import threadloom as tl
from threadloom import FakeWorker, Problem
from threadloom.errors import WorkerError
from threadloom.orchestrator.context import RunContext
from threadloom.orchestrator.generation import DEADLINE_GRACE_S
from threadloom.orchestrator.runner import RUN_GRACE_S
from threadloom.strategies.base import Strategy
from threadloom.strategies.first_finish import FirstFinish
from threadloom.strategies.registry import make_strategy
from threadloom.types import Budget, GenerationRequest, SamplingParams

LONG = " ".join(f"w{i}" for i in range(30))
Q = Problem(prompt="What is 6 * 7?", answer_format="number")


async def test_a_wall_budget_is_a_deadline_that_aborts_generations_in_flight() -> None:
    worker = FakeWorker([LONG], token_delay_s=0.1)
    started = time.perf_counter()
    result = await tl.arun(Q, "best-of-n", n=4, worker=worker, budget=Budget(max_wall_time_s=0.5))
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5 + 0.2  # 30 tokens x 0.1 s would take 3 s
    assert result.truncated
    assert worker.in_flight == 0
    assert sorted(worker.aborted) == sorted(r.request_id for r in worker.requests)
    assert worker.tokens_emitted <= 4 * 6  # about 5 tokens each before the deadline
    assert result.usage.aborted_generations == 4
    emitted = worker.tokens_emitted
    await asyncio.sleep(0.3)
    assert worker.tokens_emitted == emitted  # nothing decodes after the run returned


async def test_a_worker_that_ignores_the_abort_is_no_longer_read_after_a_short_grace() -> None:
    worker = FakeWorker([LONG], token_delay_s=0.1, honours_abort=False)
    started = time.perf_counter()
    result = await tl.arun(Q, "single", worker=worker, budget=Budget(max_wall_time_s=0.3))
    elapsed = time.perf_counter() - started
    assert elapsed < 0.3 + DEADLINE_GRACE_S + 0.1
    assert result.truncated
    assert worker.aborted  # the abort was sent
    assert worker.in_flight == 0  # and the stream was closed on the worker's side too
    assert result.usage.aborted_generations == 1
    assert result.usage.completion_tokens == len(result.candidates[0].text.split())


async def test_a_strategy_that_ignores_the_deadline_is_cancelled_and_its_work_aborted() -> None:
    class Stubborn(Strategy):  # keeps sampling long after the budget refuses it
        kind: str = "stubborn"

        async def run(self, ctx: RunContext, inputs: list[tl.Candidate]) -> list[tl.Candidate]:
            await asyncio.sleep(5)
            return []

    started = time.perf_counter()
    result = await tl.arun(Q, Stubborn(), worker=FakeWorker(), budget=Budget(max_wall_time_s=0.2))
    assert time.perf_counter() - started < 0.2 + RUN_GRACE_S + 0.1
    assert result.truncated and result.answer is None


async def test_verification_is_cut_at_the_deadline() -> None:
    class Slow:
        name = "slow"

        async def score(self, problem: Problem, candidate: tl.Candidate) -> tl.Score:
            await asyncio.sleep(5)
            return tl.Score(value=1.0)

    started = time.perf_counter()
    result = await tl.arun(Q, "best-of-n", n=2, worker=FakeWorker(["42"]), verifier=Slow(),
                           budget=Budget(max_wall_time_s=0.3))
    assert time.perf_counter() - started < 0.3 + 0.2
    assert result.truncated
    assert result.answer == "42"  # the samples it had are still returned, unscored
    assert all(not c.scores for c in result.candidates)


async def test_a_server_that_ignores_max_tokens_is_cut_off_at_the_grant() -> None:
    worker = FakeWorker([LONG], honours_max_tokens=False)
    result = await tl.arun(Q, "single", worker=worker, params=SamplingParams(max_tokens=10))
    assert result.usage.completion_tokens == 10
    assert result.candidates[0].text.split() == LONG.split()[:10]
    assert result.candidates[0].finish_reason == "length"
    assert worker.aborted  # aborted on the worker, not merely ignored
    assert worker.tokens_emitted <= 11  # the token that overran, then it stopped
    assert worker.in_flight == 0
    node = next(n for n in result.trace.nodes if n.kind == "generation")
    assert node.data["discarded_tokens"] >= 1


async def test_a_token_budget_holds_against_a_worker_that_ignores_max_tokens() -> None:
    worker = FakeWorker([LONG], honours_max_tokens=False)
    result = await tl.arun(Q, "best-of-n", n=4, worker=worker,
                           budget=Budget(max_completion_tokens=12))
    assert result.usage.completion_tokens <= 12
    assert result.truncated
    assert worker.in_flight == 0


@pytest.mark.slow
@pytest.mark.parametrize("on_error", ["fail", "keep"])
async def test_a_failed_sample_leaves_nothing_running(on_error: str) -> None:
    def reply(request: GenerationRequest, index: int) -> str:
        if request.request_id.endswith("-0"):
            raise WorkerError("sample 0's worker broke")
        return LONG

    worker = FakeWorker(reply, token_delay_s=0.05)
    if on_error == "fail":
        with pytest.raises(WorkerError, match="broke"):
            await tl.arun(Q, "best-of-n", n=8, worker=worker, on_error=on_error)
        assert worker.in_flight == 0
        emitted = worker.tokens_emitted
        await asyncio.sleep(0.3)
        assert worker.tokens_emitted == emitted  # the seven siblings were stopped
        assert emitted < 7 * 10
    else:
        result = await tl.arun(Q, "best-of-n", n=8, worker=worker, on_error=on_error)
        assert len(result.candidates) == 7
        assert worker.in_flight == 0 and not worker.aborted


async def test_a_failed_sample_raises_when_every_sample_failed_under_keep() -> None:
    def reply(request: GenerationRequest, index: int) -> str:
        raise WorkerError("down")

    with pytest.raises(WorkerError, match="down"):
        await tl.arun(Q, "best-of-n", n=3, worker=FakeWorker(reply), on_error="keep")


async def test_the_verifier_budget_is_never_exceeded_by_judge_passes() -> None:
    steps = "6 * 7 = 42\n\nso the product is 42\n\ncheck 42 / 6 = 7\n\nAnswer: 42"
    worker = FakeWorker([steps, "Yes"])
    result = await tl.arun(Q, "best-of-n", n=4, worker=worker, verifier="self-judge",
                           budget=Budget(max_verifier_calls=5))
    assert result.usage.verifier_calls == 5
    judges = [n for n in result.trace.nodes if n.kind == "judge"]
    assert len(judges) == 5  # each admitted pass is in the trace; none ran unadmitted
    assert result.truncated


def _racing_worker() -> FakeWorker:
    """Step generation is instant; the first step written is judged quickly and every later
    one slowly, so the copy that drew the first step wins the race while the other copy waits
    on its judge."""
    steps_written = 0

    def reply(request: GenerationRequest, index: int) -> str:
        nonlocal steps_written
        if request.params.max_tokens == 1:  # a judge pass
            return "Yes"
        steps_written += 1
        return f"Answer: 42 ({'quick' if steps_written == 1 else 'slow'})\n\n"

    def delay(request: GenerationRequest) -> float:
        judged = request.messages[-1].content if request.messages else ""
        return 5.0 if request.params.max_tokens == 1 and "(slow)" in judged else 0.0

    return FakeWorker(reply, token_delay_s=delay)


async def test_a_first_finish_race_of_two_searches_aborts_the_losers_judge_passes() -> None:
    worker = _racing_worker()
    race = FirstFinish(n=2, strategy=make_strategy("beam-search", width=1, expansions=1))
    started = time.perf_counter()
    result = await tl.arun(Q, race, worker=worker, seed=3)
    assert time.perf_counter() - started < 2.0  # the slow judge (5 s) did not hold the race
    assert result.answer == "42"
    judge_ids = {r.request_id for r in worker.requests if r.params.max_tokens == 1}
    aborted_judges = judge_ids & set(worker.aborted)
    assert aborted_judges, "the losing copy's judge passes were not aborted on the worker"
    assert worker.in_flight == 0
    aborted_nodes = [n for n in result.trace.nodes
                     if n.kind == "judge" and n.data.get("finish_reason") == "abort"]
    assert aborted_nodes


async def test_cancelling_a_scope_refuses_new_work_in_it_and_its_children() -> None:
    ctx = RunContext(Q, FakeWorker())
    child = ctx.fork()
    await ctx.cancel()
    late = ctx.fork()
    for scope in (ctx, child, late):
        assert await scope.sample(2) == []


async def test_closing_a_live_stream_early_aborts_the_runs_generations() -> None:
    worker = FakeWorker([LONG], token_delay_s=0.05)
    seen = 0
    async for event in tl.stream(Q, "best-of-n", n=4, worker=worker):
        seen += event.type == "delta"
        if seen >= 3:
            break
    await asyncio.sleep(0.1)
    assert worker.in_flight == 0
    emitted = worker.tokens_emitted
    await asyncio.sleep(0.3)
    assert worker.tokens_emitted == emitted < 4 * 30
