"""A strategy of your own: ask a few times, and only ask more when the answers disagree.

A strategy is a pydantic model with a `kind` and an async `run(ctx, inputs)`. Everything it asks
of a model goes through `ctx` (`ctx.sample`, `ctx.generate`, `ctx.score_all`), so the run's
budget, deadline, cancellation and trace apply to it without any extra code.

    python examples/custom_strategy.py "What is 12 * 7?"
    python examples/custom_strategy.py "What is 12 * 7?" --worker "fake:84|84|84"
"""

from __future__ import annotations

import argparse
from typing import ClassVar, Literal

from pydantic import Field

import threadloom
from threadloom import Candidate, RunContext, Strategy
from threadloom.verifiers.voting import vote


class AskUntilAgreed(Strategy):
    """Sample `first` answers; if they do not all agree, sample `more` and vote over all."""

    kind: Literal["ask-until-agreed"] = "ask-until-agreed"
    first: int = Field(3, ge=1, le=64)
    more: int = Field(5, ge=0, le=256)
    summary: ClassVar[str] = "a few samples; more only when they disagree"

    async def run(self, ctx: RunContext, inputs: list[Candidate]) -> list[Candidate]:
        candidates = await ctx.sample(self.first, label="first round", logprobs=0)
        answers = {c.answer for c in candidates}
        if len(answers) > 1 and self.more:
            candidates += await ctx.sample(self.more, label="second round", logprobs=0)
        groups = vote(candidates, ctx.problem.answer_format)
        ranked = [member for group in groups for member in group.members]
        ctx.trace.add("vote", label=f"{len(groups)} distinct answers from {len(candidates)}")
        return ranked + [c for c in candidates if c not in ranked]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question")
    parser.add_argument("--worker", default=None, help="worker spec (default: the bundled model)")
    args = parser.parse_args()
    result = threadloom.run(args.question, AskUntilAgreed(), worker=args.worker, seed=0)
    print(f"answer: {result.answer}  ({result.usage.generations} generations)")


if __name__ == "__main__":
    main()
