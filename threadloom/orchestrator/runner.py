"""The public entry points: `arun` (async) and `run` (sync) for one problem."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from threadloom.errors import BudgetExhausted
from threadloom.orchestrator.arguments import check_run_arguments
from threadloom.orchestrator.context import OnError, RunContext
from threadloom.orchestrator.trace import EventSink, ThoughtGraph
from threadloom.strategies.base import Strategy
from threadloom.strategies.registry import make_strategy
from threadloom.telemetry import RunSpans
from threadloom.types import AnswerFormat, Budget, Candidate, Problem, Result, SamplingParams
from threadloom.verifiers.base import Verifier
from threadloom.verifiers.registry import make_verifier
from threadloom.workers.base import Worker
from threadloom.workers.registry import make_worker

RUN_GRACE_S = 0.15
"""How long past its deadline a strategy may take to return what it has."""

_FORMAT_FOR_VERIFIER: dict[str, AnswerFormat] = {
    "numeric": "number",
    "math": "boxed",
    "code": "code",
    "game24": "expression",
    "json-schema": "json",
}


def as_problem(
    problem: Problem | str,
    *,
    reference: str | None = None,
    system: str | None = None,
    answer_format: AnswerFormat | None = None,
    verifier: Verifier | None = None,
) -> Problem:
    """A Problem from a prompt string (or a Problem with the given fields filled in)."""
    fmt = answer_format or (
        _FORMAT_FOR_VERIFIER.get(verifier.name, "auto") if verifier is not None else "auto"
    )
    if isinstance(problem, Problem):
        updates: dict[str, Any] = {}
        if reference is not None:
            updates["reference"] = reference
        if system is not None:
            updates["system"] = system
        if answer_format is not None:
            updates["answer_format"] = answer_format
        return problem.model_copy(update=updates) if updates else problem
    return Problem(prompt=problem, reference=reference, system=system, answer_format=fmt)


async def execute(
    ctx: RunContext,
    strategy: Strategy,
    inputs: list[Candidate] | None = None,
    *,
    label: str | None = None,
) -> Result:
    """Run one strategy in a context and package the Result (`label`: the strategy's label,
    when the caller has it already).

    The run's wall-time budget is a deadline: generations and verifications in flight at that
    moment are aborted and the strategy returns what it has (truncated). A strategy that has not
    returned within `RUN_GRACE_S` of the deadline is cancelled outright. Whether the strategy
    returns or raises, nothing it started is left running on a worker.
    """
    started = time.perf_counter()
    left = ctx.budget.time_left_s()
    limit = None if left is None else asyncio.timeout(left + RUN_GRACE_S)
    try:
        if limit is None:
            candidates = await strategy.run(ctx, inputs or [])
        else:
            async with limit:
                candidates = await strategy.run(ctx, inputs or [])
    except BudgetExhausted:
        candidates = []
    except TimeoutError:
        if limit is None or not limit.expired():
            raise
        ctx.budget.hit_deadline()
        candidates = []
    finally:
        await ctx.cancel()  # shields its own aborts
    ctx.usage.wall_time_s = time.perf_counter() - started
    best = candidates[0] if candidates else None
    ctx.trace.finish(best.answer if best else None, truncated=ctx.truncated)
    return Result(
        answer=best.answer if best else None,
        text=best.text if best else "",
        best=best,
        candidates=candidates,
        usage=ctx.usage,
        truncated=ctx.truncated,
        strategy=label if label is not None else strategy.label(),
        trace=ctx.trace.to_model(),
    )


async def arun(
    problem: Problem | str,
    strategy: str | Strategy = "best-of-n",
    *,
    worker: Worker | str | None = None,
    verifier: str | Verifier | None = None,
    reference: str | None = None,
    system: str | None = None,
    answer_format: AnswerFormat | None = None,
    params: SamplingParams | None = None,
    budget: Budget | None = None,
    seed: int | None = None,
    on_event: EventSink | None = None,
    on_error: OnError = "fail",
    **strategy_options: Any,
) -> Result:
    """Solve one problem with a strategy and return the Result.

    Args:
        problem: The question, or a Problem.
        strategy: A strategy name ("single", "best-of-n", "self-consistency"), a spec such as
            "best-of-n:n=16", or a Strategy instance.
        worker: A Worker, a worker spec ("llamacpp:/path.gguf"), or None for the bundled model.
            A worker created here is closed before returning.
        verifier: A verifier name ("numeric", "math", "regex:...", ...) or instance.
        reference: The known answer, for verifiers that compare against one.
        system: A system prompt.
        answer_format: How the answer is written; inferred from the verifier when omitted.
        params: Default sampling parameters for the strategy's generations.
        budget: Limits on generations, tokens, verifier calls and wall time.
        seed: Makes sampling reproducible (per-sample seeds are drawn from it).
        on_event: Called with every trace event (a typed `TraceEvent`), e.g. to write JSONL
            (`event_line`) or show progress.
        on_error: When one sample's worker fails: "fail" aborts the others and raises; "keep"
            drops the failed sample and goes on with the rest.
        **strategy_options: Options for the strategy, e.g. n=8.

    Returns:
        The chosen answer, all candidates best first, usage and the thought-graph trace.

    Raises:
        ConfigError: An argument is wrong (an empty prompt, a worker that is not one,
            parameters out of range); nothing has been loaded or run.
    """
    params, budget = check_run_arguments(
        problem, worker=worker, reference=reference, system=system,
        answer_format=answer_format, params=params, budget=budget,
    )
    judge = make_verifier(verifier) if verifier is not None else None
    chosen = make_strategy(strategy, **strategy_options)
    the_problem = as_problem(
        problem, reference=reference, system=system, answer_format=answer_format, verifier=judge
    )
    owned = worker is None or isinstance(worker, str)
    owned_judge = isinstance(verifier, str)
    backend = make_worker(worker)
    label = chosen.label()
    spans = RunSpans(label, on_event)
    try:
        ctx = RunContext(
            the_problem,
            backend,
            verifiers={judge.name: judge} if judge else None,
            default_verifier=judge.name if judge else None,
            params=params,
            budget=budget,
            trace=ThoughtGraph(spans.sink),
            seed=seed,
            on_error=on_error,
        )
        return spans.finish(await execute(ctx, chosen, label=label))
    finally:
        spans.close()
        if owned:
            await backend.close()
        close = getattr(judge, "close", None) if owned_judge else None
        if callable(close):
            close()


def run(problem: Problem | str, strategy: str | Strategy = "best-of-n", **kwargs: Any) -> Result:
    """Synchronous `arun`: same arguments, for scripts without an event loop."""
    return asyncio.run(arun(problem, strategy, **kwargs))
