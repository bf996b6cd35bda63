"""Process reward models: a score per step of a (partial) solution.

`SelfJudgePRM` works anywhere, on CPU too: the worker's own model is asked whether the latest
step is correct, and the score is p(Yes) / (p(Yes) + p(No)) read from the next token's
log-probabilities. One forward pass per step. The judge prompt lists the steps in order and
puts the question about the latest step last, so the prompt for step i extends the prompt for
step i - 1 and the worker's prefix cache serves the shared part.

A PRM that needs a worker gets the run's worker through `attach` (the run context attaches
every verifier that has the method), so it never imports a concrete worker.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from dataclasses import dataclass

from threadloom.errors import ConfigError, VerifierError
from threadloom.types import (
    Candidate,
    ChatMessage,
    GenerationRequest,
    Problem,
    SamplingParams,
    Score,
)
from threadloom.verifiers.base import StepAggregation, aggregate_steps
from threadloom.workers.base import Worker

JUDGE_PROMPT = (
    "Question: {question}\n\nSolution steps:\n{steps}\n\n"
    "Is step {last} correct? Answer Yes or No."
)
_CACHE_SIZE = 4096


def split_steps(text: str, delimiter: str = "\n\n") -> list[str]:
    """The non-empty steps of a solution written with a step delimiter."""
    return [part.strip() for part in text.split(delimiter) if part.strip()]


def yes_no_probability(top: dict[str, float], floor: float = 1e-4) -> float:
    """p(Yes) / (p(Yes) + p(No)) from one position's top log-probabilities.

    Token variants (' Yes', 'yes', 'YES', ...) are summed; a side absent from the top
    alternatives gets `floor` probability, so the score stays inside (0, 1).
    """
    yes = sum(math.exp(lp) for t, lp in top.items() if t.strip().lower() == "yes")
    no = sum(math.exp(lp) for t, lp in top.items() if t.strip().lower() == "no")
    yes, no = max(yes, floor), max(no, floor)
    return yes / (yes + no)


@dataclass(frozen=True)
class StepScores:
    """Per-step scores plus what computing them cost."""

    scores: list[float]
    calls: int
    """Forward passes (PRM calls) made; cached steps cost none."""
    tokens: int
    """Prompt tokens the judge read for those calls."""


class SelfJudgePRM:
    """The generator's own model as a process reward model.

    Args:
        aggregation: How step scores combine into one (min, prod, last, mean).
        delimiter: Step delimiter used to split a complete candidate's text.
        top_logprobs: Alternatives read at the answer position.
        worker: The model to judge with (default: the run's worker, attached by the run).
    """

    def __init__(
        self,
        *,
        aggregation: StepAggregation = "min",
        delimiter: str = "\n\n",
        top_logprobs: int = 20,
        worker: Worker | None = None,
        name: str = "self-judge",
    ) -> None:
        if aggregation not in ("min", "prod", "last", "mean"):
            raise ConfigError(f"aggregation must be min, prod, last or mean, not {aggregation!r}")
        self.aggregation: StepAggregation = aggregation
        self.delimiter = delimiter
        self.top_logprobs = top_logprobs
        self.name = name
        self._worker = worker
        self._cache: OrderedDict[tuple[str, tuple[str, ...]], float] = OrderedDict()

    def attach(self, worker: Worker) -> None:
        """Judge with this worker unless one was given explicitly."""
        if self._worker is None:
            self._worker = worker

    async def score_steps(self, problem: Problem, steps: list[str]) -> list[float]:
        return (await self.score_steps_counted(problem, steps)).scores

    async def score_steps_counted(self, problem: Problem, steps: list[str]) -> StepScores:
        """Score every step given the ones before it; steps seen before come from a cache."""
        question = problem.prompt or problem.chat()[-1].content
        missing = [i for i in range(len(steps)) if self._key(question, steps, i) not in self._cache]
        results = await asyncio.gather(*(self._judge(question, steps, i) for i in missing))
        tokens = 0
        for i, (value, used) in zip(missing, results, strict=True):
            self._remember(self._key(question, steps, i), value)
            tokens += used
        scores = [self._cache[self._key(question, steps, i)] for i in range(len(steps))]
        return StepScores(scores=scores, calls=len(missing), tokens=tokens)

    async def score(self, problem: Problem, candidate: Candidate) -> Score:
        """Outcome use: the aggregated step scores of a complete candidate."""
        steps = candidate.steps or split_steps(candidate.text, self.delimiter)
        if not steps:
            return Score(value=0.0, passed=False, detail="no steps to judge")
        counted = await self.score_steps_counted(problem, steps)
        value = aggregate_steps(counted.scores, self.aggregation)
        return Score(value=value, detail=f"{self.aggregation} of {len(steps)} step scores",
                     calls=counted.calls, tokens=counted.tokens)

    def _key(self, question: str, steps: list[str], i: int) -> tuple[str, tuple[str, ...]]:
        return question, tuple(steps[: i + 1])

    def _remember(self, key: tuple[str, tuple[str, ...]], value: float) -> None:
        self._cache[key] = value
        self._cache.move_to_end(key)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)

    async def _judge(self, question: str, steps: list[str], i: int) -> tuple[float, int]:
        if self._worker is None:
            raise VerifierError(
                "SelfJudgePRM has no worker: pass worker=... or run it inside a run context"
            )
        listed = "\n".join(
            f"Step {k + 1}: {' '.join(s.split())}" for k, s in enumerate(steps[: i + 1])
        )
        request = GenerationRequest(
            messages=(
                ChatMessage(
                    role="user",
                    content=JUDGE_PROMPT.format(question=question, steps=listed, last=i + 1),
                ),
            ),
            params=SamplingParams(temperature=0.0, max_tokens=1, logprobs=self.top_logprobs),
            affinity_key=f"judge:{question[:64]}",
        )
        completion = await self._worker.generate(request)
        top = completion.logprobs[0].top if completion.logprobs else {}
        if completion.logprobs and not top:
            top = {completion.logprobs[0].token: completion.logprobs[0].logprob}
        prompt = completion.usage.prompt_tokens - completion.usage.cached_prompt_tokens
        return yes_no_probability(top), prompt
