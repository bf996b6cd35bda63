"""One token budget shared over a list of problems: probe each, then sample where votes split.

Compute-optimal allocation in the spirit of Snell et al. (2024): every problem first gets a
few probe samples; after that each free slot of the worker goes to the problem whose vote is
most split (and that still yields answers), while problems whose answer has settled get no
more. Samples of all problems share the worker's batch, so it stays full to the end.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from threadloom.errors import BudgetExhausted, WorkerError
from threadloom.evaluation.bench import (
    Verifiers,
    describe_error,
    problem_seed,
    record_key,
    strategy_view,
)
from threadloom.evaluation.fingerprint import RunFingerprint
from threadloom.evaluation.records import BenchRecord, ResultLog
from threadloom.orchestrator.context import RunContext
from threadloom.strategies.tally import rank_by_vote
from threadloom.types import Candidate, Problem, SamplingParams
from threadloom.verifiers.stopping import cannot_be_overtaken, leader_probability, top_two
from threadloom.verifiers.voting import answer_key
from threadloom.workers.base import Worker

logger = logging.getLogger(__name__)


class BatchBudget(BaseModel):
    """How one completion-token budget is shared over a batch of problems."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    budget_tokens: int = Field(ge=1)
    """Completion tokens for the whole batch (aborted samples' tokens count too)."""
    probe: int = Field(2, ge=1, le=64)
    """Samples every problem gets before any gets more."""
    max_per_problem: int = Field(32, ge=1, le=4096)
    """Most samples one problem may get."""
    confidence: float = Field(0.85, gt=0.5, lt=1.0)
    """A problem is settled once its leading answer is ahead with this posterior probability."""

    def label(self) -> str:
        """The strategy label of this mode's bench records."""
        return (
            f"batch-budget:tokens={self.budget_tokens},probe={self.probe},"
            f"max={self.max_per_problem},confidence={self.confidence}"
        )


@dataclass
class ProblemState:
    """One problem's samples so far."""

    problem: Problem
    ctx: RunContext
    candidates: list[Candidate] = field(default_factory=list)
    keys: list[str | None] = field(default_factory=list)
    in_flight: int = 0
    error: str | None = None

    @property
    def taken(self) -> int:
        return len(self.candidates) + self.in_flight

    def settled(self, config: BatchBudget) -> bool:
        return vote_settled(self.keys, config)

    def priority(self) -> float:
        return split_priority(self.keys, self.taken)


def vote_settled(keys: Sequence[str | None], config: BatchBudget) -> bool:
    """Whether a problem's vote needs no more samples: its leader is sure enough at
    `config.confidence`, or cannot be overtaken within `config.max_per_problem`."""
    _, first, second = top_two(keys)
    if cannot_be_overtaken(first, second, config.max_per_problem - len(keys)):
        return True
    return first > 0 and leader_probability(first, second) >= config.confidence


def split_priority(keys: Sequence[str | None], taken: int) -> float:
    """How much one more sample is worth to a problem: higher for a more split vote, lower for
    a problem that rarely yields an answer and for one that already has many samples
    (diminishing returns). `taken` counts its samples finished and in flight."""
    _, first, second = top_two(keys)
    split = 1.0 - leader_probability(first, second)
    answered = (sum(k is not None for k in keys) + 1) / (len(keys) + 2)
    return split * answered / math.sqrt(1 + taken)


@dataclass
class Allocator:
    """Hands out samples under one token budget; see the module docstring."""

    config: BatchBudget
    states: list[ProblemState]
    max_tokens: int
    finished_samples: int = 0
    finished_tokens: int = 0
    reserved: int = 0
    """Token caps of the samples in flight: the budget never pays for more than it holds."""

    def spent(self) -> int:
        return sum(s.ctx.usage.completion_tokens for s in self.states)

    def estimate(self) -> float:
        """Expected tokens of one more sample: the mean so far (the cap until a few finished)."""
        if self.finished_samples < 4:
            return float(self.max_tokens)
        return self.finished_tokens / self.finished_samples

    def cap(self) -> int:
        """The token cap of the next sample: what the budget holds beyond the samples in
        flight (each reserved at its cap), at most `max_tokens`."""
        left = self.config.budget_tokens - self.spent() - self.reserved
        return max(0, min(self.max_tokens, left))

    def affordable(self) -> bool:
        """Whether the next sample's cap leaves room for a typical sample."""
        return self.cap() >= min(self.max_tokens, max(1, math.ceil(self.estimate())))

    def pick(self) -> ProblemState | None:
        """The problem the next sample goes to, or None when nothing should start now."""
        if not self.affordable():
            return None
        live = [s for s in self.states if s.error is None]
        for state in live:
            if state.taken < self.config.probe:
                return state
        if any(s.in_flight for s in live if len(s.candidates) < self.config.probe):
            return None  # wait for the probes before choosing where to spend
        open_ = [
            s
            for s in live
            if s.taken < self.config.max_per_problem and not s.settled(self.config)
        ]
        if not open_:
            return None
        best = max(open_, key=ProblemState.priority)
        return best if best.priority() > 0 else None


async def allocate(
    problems: Sequence[Problem],
    worker: Worker,
    config: BatchBudget,
    *,
    params: SamplingParams | None = None,
    seed: int = 0,
    slots: int | None = None,
) -> list[ProblemState]:
    """Sample the problems under one token budget; returns each problem's samples.

    Args:
        problems: The problems, as strategies may see them (no references).
        worker: Generates the samples; up to `slots` run on it at once.
        config: The budget and how it is shared.
        params: Sampling parameters of every sample.
        seed: Seeds each problem's samples (per problem, as a bench does).
        slots: Samples in flight together (default: the worker's batch size).
    """
    sampling = params or SamplingParams()
    width = slots or max(1, worker.capabilities.max_batch)
    states = [
        ProblemState(
            problem=p,
            ctx=RunContext(p, worker, params=sampling, seed=problem_seed(seed, p.id),
                           on_error="keep"),
        )
        for p in problems
    ]
    allocator = Allocator(config, states, sampling.max_tokens)

    async def draw(state: ProblemState, cap: int) -> None:
        try:
            samples = await state.ctx.sample(
                1, label=f"sample {state.taken}", logprobs=0, max_tokens=cap
            )
        except BudgetExhausted:
            samples = []
        except (WorkerError, OSError) as exc:
            state.error = describe_error(exc)
            samples = []
        finally:
            state.in_flight -= 1
            allocator.reserved -= cap
        allocator.finished_samples += 1
        allocator.finished_tokens += sum(sample.completion_tokens for sample in samples)
        for sample in samples:
            state.candidates.append(sample)
            state.keys.append(answer_key(sample.answer, state.problem.answer_format))

    running: set[asyncio.Task[None]] = set()
    try:
        while True:
            while len(running) < width and (state := allocator.pick()) is not None:
                cap = allocator.cap()
                state.in_flight += 1  # counted at once, so the next pick sees it
                allocator.reserved += cap
                running.add(asyncio.create_task(draw(state, cap)))
            if not running:
                break
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    logger.info(
        "batch budget: %d of %d tokens over %d problems", allocator.spent(),
        config.budget_tokens, len(states),
    )
    return states


def difficulty_bin(sample_accuracy: float | None) -> str:
    """A problem's difficulty from the share of its samples that were right."""
    if sample_accuracy is None:
        return "no samples"
    if sample_accuracy == 0:
        return "none right"
    if sample_accuracy < 1 / 3:
        return "hard"
    if sample_accuracy < 2 / 3:
        return "medium"
    return "easy"


async def run_budget_bench(
    problems: Sequence[Problem],
    worker: Worker,
    log: ResultLog,
    config: BatchBudget,
    *,
    dataset: str,
    verifiers: Verifiers,
    fingerprint: RunFingerprint,
    params: SamplingParams | None = None,
    seed: int = 0,
    on_record: Callable[[BenchRecord], None] | None = None,
) -> list[BenchRecord]:
    """Run the batch-budget mode over the problems not yet in the log; returns new records.

    The problems left share `config.budget_tokens` scaled by their share of all problems, so a
    resumed run spends what the interrupted one would have spent on them.
    """
    label = config.label()
    with log.lock():
        log.check_fingerprint(fingerprint)
        done = log.done_keys()
        todo = [p for p in problems if record_key(dataset, p, label, seed) not in done]
        if not todo:
            return []
        share = max(1, round(config.budget_tokens * len(todo) / len(problems)))
        scaled = config.model_copy(update={"budget_tokens": share})
        started = time.perf_counter()
        states = await allocate(
            [strategy_view(p) for p in todo], worker, scaled, params=params, seed=seed
        )
        # problems share the batch, so each is charged an equal part of the whole run's time
        wall = (time.perf_counter() - started) / len(todo)
        new: list[BenchRecord] = []
        for problem, state in zip(todo, states, strict=True):
            record = await _grade_state(problem, state, verifiers, config, dataset, seed)
            record.wall_time_s = wall
            record.fingerprint = fingerprint
            log.append(record)
            new.append(record)
            if on_record is not None:
                on_record(record)
    return new


async def _grade_state(
    problem: Problem,
    state: ProblemState,
    verifiers: Verifiers,
    config: BatchBudget,
    dataset: str,
    seed: int,
) -> BenchRecord:
    ranked = rank_by_vote(state.ctx, state.candidates)
    grader = verifiers.grader(problem)

    async def ok(candidate: Candidate) -> bool:
        return bool((await grader.score(problem, candidate.model_copy(deep=True))).passed)

    verdicts = await asyncio.gather(*(ok(c) for c in ranked))
    usage = state.ctx.usage
    sample_accuracy = sum(verdicts) / len(verdicts) if verdicts else None
    extra: dict[str, Any] = {
        "samples": len(state.candidates),
        "settled": state.settled(config),
        "sample_accuracy": sample_accuracy,
        "difficulty": difficulty_bin(sample_accuracy),
    }
    return BenchRecord(
        dataset=dataset,
        problem_id=problem.id,
        strategy=config.label(),
        seed=problem_seed(seed, problem.id),
        reference=problem.reference,
        answer=ranked[0].answer if ranked else None,
        correct=bool(verdicts) and verdicts[0],
        covered=any(verdicts),
        candidates=len(ranked),
        truncated=not state.settled(config) and state.taken < config.max_per_problem,
        generations=usage.generations,
        prompt_tokens=usage.prompt_tokens,
        cached_prompt_tokens=usage.cached_prompt_tokens,
        completion_tokens=usage.completion_tokens,
        error=state.error,
        extra=extra,
    )
