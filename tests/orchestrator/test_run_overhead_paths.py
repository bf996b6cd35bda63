"""The cheaper paths a run takes per generation, judged by what they leave behind: pure
verifiers scored in the calling task (and in their own tasks under a deadline), candidates and
per-sample requests built without validation yet equal to validated ones, usage counted without
pydantic's setattr, the tracer lookup answering a provider set after the first run, and the
worker check remembering only classes that declare every member."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

import threadloom as tl
from threadloom import FakeWorker, Problem
from threadloom.errors import ConfigError
from threadloom.orchestrator.arguments import check_worker
from threadloom.orchestrator.context import RunContext
from threadloom.types import Budget, Candidate, GenerationRequest, Score, Usage

Q = Problem(prompt="What is 6 * 7?", answer_format="number")


class TaskRecorder:
    """A verifier that records the task each score ran in."""

    name = "recorder"

    def __init__(self, *, inline: bool) -> None:
        self.runs_inline = inline
        self.tasks: list[asyncio.Task[object] | None] = []

    async def score(self, problem: Problem, candidate: Candidate) -> Score:
        self.tasks.append(asyncio.current_task())
        return Score(value=1.0, passed=True)


async def test_a_pure_verifier_scores_every_candidate_in_the_calling_task() -> None:
    judge = TaskRecorder(inline=True)
    ctx = RunContext(Q, FakeWorker(["42"]), verifiers={"recorder": judge})
    candidates = await ctx.sample(5)
    await ctx.score_all(candidates, "recorder")
    assert judge.tasks == [asyncio.current_task()] * 5
    assert all(c.scores["recorder"].value == 1.0 for c in candidates)
    scores = [n for n in ctx.trace.to_model().nodes if n.kind == "score"]
    assert len(scores) == 5
    assert ctx.usage.verifier_calls == 5


@pytest.mark.parametrize(
    ("inline", "budget"),
    [(True, Budget(max_wall_time_s=60)), (False, None)],
    ids=["pure-under-a-deadline", "not-said-to-be-pure"],
)
async def test_otherwise_each_candidate_is_scored_in_its_own_task(
    inline: bool, budget: Budget | None
) -> None:
    judge = TaskRecorder(inline=inline)
    ctx = RunContext(Q, FakeWorker(["42"]), verifiers={"recorder": judge}, budget=budget)
    candidates = await ctx.sample(4)
    await ctx.score_all(candidates, "recorder")
    assert len(set(map(id, judge.tasks))) == 4
    assert asyncio.current_task() not in judge.tasks
    assert all("recorder" in c.scores for c in candidates)


async def test_inline_scoring_stops_at_the_verifier_budget() -> None:
    judge = TaskRecorder(inline=True)
    ctx = RunContext(
        Q, FakeWorker(["42"]), verifiers={"recorder": judge}, budget=Budget(max_verifier_calls=2)
    )
    candidates = await ctx.sample(5)
    await ctx.score_all(candidates, "recorder")
    assert len(judge.tasks) == 2
    assert [bool(c.scores) for c in candidates] == [True, True, False, False, False]
    assert ctx.usage.verifier_calls == 2
    assert ctx.truncated


async def test_a_pure_verifier_that_crashes_inline_scores_that_candidate_as_failed() -> None:
    class Crashing(TaskRecorder):
        async def score(self, problem: Problem, candidate: Candidate) -> Score:
            await super().score(problem, candidate)
            if len(self.tasks) == 2:
                raise ZeroDivisionError("hostile answer")
            return Score(value=1.0, passed=True)

    judge = Crashing(inline=True)
    ctx = RunContext(Q, FakeWorker(["42"]), verifiers={"recorder": judge})
    candidates = await ctx.sample(3)
    await ctx.score_all(candidates, "recorder")
    assert [c.scores["recorder"].passed for c in candidates] == [True, False, True]


def test_the_built_in_pure_verifiers_say_so() -> None:
    from threadloom.verifiers.base import runs_inline
    from threadloom.verifiers.registry import make_verifier

    for spec in ("numeric", "regex:^4", "contains:42"):
        assert runs_inline(make_verifier(spec)), spec
    assert not runs_inline(make_verifier("math"))


async def test_sampled_candidates_equal_validated_ones_and_share_nothing_mutable() -> None:
    ctx = RunContext(Q, FakeWorker(["The answer is 42", "It is 41"]))
    candidates = await ctx.sample(2)
    for candidate in candidates:
        assert Candidate.model_validate(candidate.model_dump()) == candidate
    assert [c.answer for c in candidates] == ["42", "41"]
    first, second = candidates
    first.scores["x"] = Score(value=1.0)
    first.steps.append("step")
    first.metadata["k"] = 1
    assert second.scores == {} and second.steps == [] and second.metadata == {}


async def test_each_sample_request_is_the_same_request_with_its_own_id() -> None:
    worker = FakeWorker(["42"])
    ctx = RunContext(Q, worker)
    await ctx.sample(3, temperature=0.3)
    first = worker.requests[0]
    ids = [r.request_id for r in worker.requests]
    assert len(set(ids)) == 3 and all(i.endswith(f"-{n}") for n, i in enumerate(ids))
    for request in worker.requests:
        assert GenerationRequest.model_validate(request.model_dump()) == request
        assert request.model_dump(exclude={"request_id"}) == first.model_dump(
            exclude={"request_id"}
        )
    assert first.params.temperature == 0.3


async def test_usage_counts_every_generation_and_verifier_call() -> None:
    result = await tl.arun(
        "What is 6 * 7?", "best-of-n", n=4, worker=FakeWorker(["The answer is 42"]),
        verifier="numeric",
    )
    usage = result.usage
    assert usage.generations == 4
    assert usage.completion_tokens == 4 * 4
    assert usage.prompt_tokens > 0
    assert usage.verifier_calls == 4
    assert Usage.model_validate(usage.model_dump()) == usage


def test_the_tracer_lookup_sees_a_provider_set_after_runs_without_one() -> None:
    script = textwrap.dedent(
        """
        import asyncio
        import threadloom as tl
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
        from threadloom.telemetry import active_tracer

        worker = tl.FakeWorker(["42"])
        assert active_tracer() is None
        asyncio.run(tl.arun("q", "single", worker=worker))
        provider = TracerProvider()
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        assert active_tracer() is not None
        asyncio.run(tl.arun("q", "single", worker=worker))
        print(sorted({s.name for s in exporter.get_finished_spans()}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "threadloom.run" in done.stdout


def test_the_worker_check_refuses_an_object_lacking_members_after_passing_workers() -> None:
    check_worker(FakeWorker(["42"]))
    check_worker(FakeWorker(["42"]))  # the class is remembered

    class HalfWorker:
        async def generate(self, request: GenerationRequest) -> None: ...

    with pytest.raises(ConfigError, match="stream"):
        check_worker(HalfWorker())
    with pytest.raises(ConfigError, match="stream"):
        check_worker(HalfWorker())
