"""Model-based verifiers (process reward models, LLM judges) and how they reach a model.

A verifier that calls a model never holds the run's worker. Inside a run, the run context hands
it a `ModelCalls` for each judgement, and every call made through it is admitted against the
run's verifier budget, aborted when the scope that asked is cancelled or its deadline passes,
and recorded in the thought graph. Outside a run (a script scoring a few steps), `score` and
`score_steps` use `DirectModelCalls`, which simply calls the verifier's own worker.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from threadloom.errors import VerifierError
from threadloom.types import Candidate, Completion, GenerationRequest, Problem, Score
from threadloom.verifiers.base import StepAggregation, aggregate_steps
from threadloom.workers.base import Worker

T = TypeVar("T")


@dataclass(frozen=True)
class StepScores:
    """Per-step scores plus what computing them cost."""

    scores: list[float]
    calls: int
    """Model passes made; steps served from a cache cost none."""
    tokens: int
    """Tokens the model read and wrote for those passes."""


class ModelCalls(Protocol):
    """The way a model-based verifier calls a model."""

    async def generate(
        self, request: GenerationRequest, *, worker: Worker | None = None, label: str = "judge"
    ) -> Completion:
        """One generation on `worker` (default: the run's worker).

        Raises:
            BudgetExhausted: the run's verifier budget or deadline refused the call, or the
                scope was cancelled while it ran (the request was aborted on the worker).
        """
        ...

    async def call(self, work: Callable[[], Awaitable[T]], *, label: str = "judge") -> T:
        """Any other model call (a pooling request to a reward model, an HTTP scoring call),
        admitted and cancellable like a generation."""
        ...


class DirectModelCalls:
    """Model calls straight to a worker, with no run around them (scripts, tests)."""

    def __init__(self, worker: Worker | None, owner: str) -> None:
        self._worker = worker
        self._owner = owner

    async def generate(
        self, request: GenerationRequest, *, worker: Worker | None = None, label: str = "judge"
    ) -> Completion:
        target = worker or self._worker
        if target is None:
            raise VerifierError(
                f"{self._owner} has no worker: pass worker=... or use it inside a run, "
                "which lends it the run's worker"
            )
        return await target.generate(request)

    async def call(self, work: Callable[[], Awaitable[T]], *, label: str = "judge") -> T:
        return await work()


class ModelVerifier(ABC):
    """Base of the verifiers that call a model to judge steps (process reward models).

    Subclasses implement `judge_steps`; the run calls `judge_steps` and `judge` with its own
    `ModelCalls`. `score` and `score_steps` serve use outside a run.
    """

    name: str
    aggregation: StepAggregation
    delimiter: str = "\n\n"
    worker: Worker | None = None
    """The model to judge with outside a run, or a fixed judge model inside one (default:
    the run's worker)."""

    @abstractmethod
    async def judge_steps(
        self, problem: Problem, steps: list[str], model: ModelCalls
    ) -> StepScores:
        """Score every step given the ones before it, calling models only through `model`."""

    async def judge(self, problem: Problem, candidate: Candidate, model: ModelCalls) -> Score:
        """Outcome use: the aggregated step scores of a complete candidate."""
        steps = candidate.steps or split_steps(candidate.text, self.delimiter)
        if not steps:
            return Score(value=0.0, passed=False, detail="no steps to judge", calls=0)
        counted = await self.judge_steps(problem, steps, model)
        value = aggregate_steps(counted.scores, self.aggregation)
        return Score(
            value=value,
            detail=f"{self.aggregation} of {len(steps)} step scores",
            calls=counted.calls,
            tokens=counted.tokens,
        )

    async def score_steps(self, problem: Problem, steps: list[str]) -> list[float]:
        """Step scores outside a run, judged by the verifier's own worker."""
        return (await self.judge_steps(problem, steps, self.direct_calls())).scores

    async def score(self, problem: Problem, candidate: Candidate) -> Score:
        """Outcome score outside a run, judged by the verifier's own worker."""
        return await self.judge(problem, candidate, self.direct_calls())

    def direct_calls(self) -> ModelCalls:
        return DirectModelCalls(self.worker, type(self).__name__)


def split_steps(text: str, delimiter: str = "\n\n") -> list[str]:
    """The non-empty steps of a solution written with a step delimiter."""
    return [part.strip() for part in text.split(delimiter) if part.strip()]
