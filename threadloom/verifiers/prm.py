"""Process reward models: a score per step of a (partial) solution.

`SelfJudgePRM` works anywhere, on CPU too: the worker's own model is asked whether the latest
step is correct, and the score is p(Yes) / (p(Yes) + p(No)) read from the next token's
log-probabilities. One forward pass per step. The judge prompt lists the steps in order and
puts the question about the latest step last, so the prompt for step i extends the prompt for
step i - 1 and the worker's prefix cache serves the shared part.

Inside a run every judge pass goes through the run (see `verifiers/judging.py`): admitted
against the verifier budget, aborted with the scope that asked for it, and a node of the thought
graph. The PRM never imports a concrete worker.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict

from threadloom.errors import ConfigError
from threadloom.types import ChatMessage, GenerationRequest, Problem, SamplingParams
from threadloom.verifiers.base import StepAggregation
from threadloom.verifiers.judging import ModelCalls, ModelVerifier, StepScores, split_steps
from threadloom.workers.base import Worker

__all__ = ["JUDGE_PROMPT", "SelfJudgePRM", "StepScores", "split_steps", "yes_no_probability"]

JUDGE_PROMPT = (
    "Question: {question}\n\nSolution steps:\n{steps}\n\n"
    "Is step {last} correct? Answer Yes or No."
)
_CACHE_SIZE = 4096


def yes_no_probability(top: dict[str, float], floor: float = 1e-4) -> float:
    """p(Yes) / (p(Yes) + p(No)) from one position's top log-probabilities.

    Token variants (' Yes', 'yes', 'YES', ...) are summed; a side absent from the top
    alternatives gets `floor` probability, so the score stays inside (0, 1).
    """
    yes = sum(math.exp(lp) for t, lp in top.items() if t.strip().lower() == "yes")
    no = sum(math.exp(lp) for t, lp in top.items() if t.strip().lower() == "no")
    yes, no = max(yes, floor), max(no, floor)
    return yes / (yes + no)


class SelfJudgePRM(ModelVerifier):
    """The generator's own model as a process reward model.

    Args:
        aggregation: How step scores combine into one (min, prod, last, mean).
        delimiter: Step delimiter used to split a complete candidate's text.
        top_logprobs: Alternatives read at the answer position.
        worker: The model to judge with (default: the run's worker; required outside a run).
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
        self.worker = worker
        self._cache: OrderedDict[tuple[str, tuple[str, ...]], float] = OrderedDict()

    async def judge_steps(
        self, problem: Problem, steps: list[str], model: ModelCalls
    ) -> StepScores:
        """Score every step given the ones before it; steps seen before come from a cache.

        A pass the budget refused (or a cancelled scope aborted) leaves its step uncached, and
        its BudgetExhausted is raised once the admitted passes have landed in the cache.
        """
        question = problem.prompt or problem.chat()[-1].content
        missing = [i for i in range(len(steps)) if self._key(question, steps, i) not in self._cache]
        results = await asyncio.gather(
            *(self._judge(model, question, steps, i) for i in missing), return_exceptions=True
        )
        tokens = calls = 0
        refused: BaseException | None = None
        for i, outcome in zip(missing, results, strict=True):
            if isinstance(outcome, BaseException):
                refused = refused or outcome
                continue
            value, used = outcome
            self._remember(self._key(question, steps, i), value)
            tokens += used
            calls += 1
        if refused is not None:
            raise refused
        scores = [self._cache[self._key(question, steps, i)] for i in range(len(steps))]
        return StepScores(scores=scores, calls=calls, tokens=tokens)

    def _key(self, question: str, steps: list[str], i: int) -> tuple[str, tuple[str, ...]]:
        return question, tuple(steps[: i + 1])

    def _remember(self, key: tuple[str, tuple[str, ...]], value: float) -> None:
        self._cache[key] = value
        self._cache.move_to_end(key)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)

    async def _judge(
        self, model: ModelCalls, question: str, steps: list[str], i: int
    ) -> tuple[float, int]:
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
        completion = await model.generate(request, worker=self.worker, label=f"judge step {i + 1}")
        top = completion.logprobs[0].top if completion.logprobs else {}
        if completion.logprobs and not top:
            top = {completion.logprobs[0].token: completion.logprobs[0].logprob}
        usage = completion.usage
        read = usage.prompt_tokens - usage.cached_prompt_tokens + usage.completion_tokens
        return yes_no_probability(top), read
