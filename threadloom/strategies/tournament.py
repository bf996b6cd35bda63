"""tournament: N samples, then an LLM judge picks the best in A-vs-B knockout rounds."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from threadloom.errors import ConfigError
from threadloom.strategies.base import Strategy
from threadloom.types import Candidate
from threadloom.verifiers.llm_judge import LLMJudge

if TYPE_CHECKING:
    from threadloom.orchestrator.context import RunContext


class Tournament(Strategy):
    """Sample `n` answers, then rank them with pairwise LLM-judge comparisons.

    Each comparison asks the judge in both orders (two judge calls); a knockout over n
    answers makes n - 1 comparisons. The calls go through the run like every verifier call:
    they count against the verifier budget, stop when the run is cancelled and appear in the
    trace.
    """

    kind: Literal["tournament"] = "tournament"
    n: int = Field(8, ge=1, le=4096)
    """How many samples compete."""
    judge: str = "llm-judge"
    """The LLM judge: a verifier configured for the run under this name, else a spec such
    as 'llm-judge' (the run's worker judges) or 'llm-judge:openai:URL#model=NAME'."""
    summary: ClassVar[str] = "N samples, an LLM judge picks the best in A-vs-B rounds"

    async def run(self, ctx: RunContext, inputs: list[Candidate]) -> list[Candidate]:
        from threadloom.orchestrator.context import RunModelCalls
        from threadloom.verifiers.registry import make_verifier

        candidates = await ctx.sample(
            self.n,
            prefix=self.continuation(inputs),
            label="tournament",
            logprobs=0,
            **self.sampling_overrides(),
        )
        judge = ctx.verifiers.get(self.judge)
        if judge is None:
            judge = make_verifier(self.judge)
            ctx.verifiers[self.judge] = judge
        if not isinstance(judge, LLMJudge):
            raise ConfigError(
                f"tournament needs an LLM judge; {self.judge!r} is {type(judge).__name__}. "
                "Use judge='llm-judge' or 'llm-judge:WORKER'"
            )
        ranked = await judge.tournament(ctx.problem, candidates, RunModelCalls(ctx, None))
        if ranked:
            ctx.trace.add(
                "select",
                label=f"tournament winner of {len(ranked)}",
                parents=[(c.node_id, "select") for c in ranked[:1] if c.node_id],
                considered=len(ranked),
            )
        return ranked
