"""Step generation and step scoring shared by the step-wise searches (beam, A*, particles)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from threadloom.errors import BudgetExhausted
from threadloom.strategies.base import Strategy
from threadloom.types import Candidate
from threadloom.verifiers.base import StepAggregation, aggregate_steps
from threadloom.verifiers.extract import extract_answer_line, extract_boxed
from threadloom.verifiers.voting import vote

if TYPE_CHECKING:
    from threadloom.orchestrator.context import RunContext

STEP_SYSTEM = (
    "Solve the problem step by step. Separate steps with a blank line. End with a line "
    "'Answer: <answer>'."
)


@dataclass
class Partial:
    """A partial (or complete) solution in a step-wise search."""

    text: str = ""
    steps: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    """PRM score of each step."""
    node_id: str | None = None
    complete: bool = False
    finish_reason: str = "stop"
    tokens: int = 0
    """Generator tokens spent on this path."""

    def value(self, how: StepAggregation) -> float:
        return aggregate_steps(self.scores, how)


def is_complete_step(step_text: str, answer_format: str) -> bool:
    """Whether a step finishes the solution: a boxed answer or an 'Answer:' line."""
    if extract_boxed(step_text) is not None:
        return True
    return answer_format != "boxed" and extract_answer_line(step_text) is not None


class StepSearch(Strategy):
    """Base of the step-wise searches: step generation and PRM scoring with budgets."""

    prm: str = "self-judge"
    """Process reward model (a verifier name) scoring each step."""
    aggregation: StepAggregation = "min"
    """How step scores combine into a path's score."""
    delimiter: str = "\n\n"
    """Text that ends a step."""
    step_tokens: int = Field(96, ge=4)
    """Token limit for one step."""
    max_steps: int = Field(8, ge=1, le=64)
    """Steps at most per solution."""
    step_prompt: bool = True
    """Add a system prompt asking for blank-line separated steps and an 'Answer:' line."""
    select: Literal["best", "weighted-vote"] = "best"
    """Final pick: the highest aggregated PRM score, or a vote over answers weighted by it."""
    outcome_verifier: str | None = None
    """A verifier scoring complete solutions (an outcome reward); it ranks them before the
    PRM score does."""

    def scope(self, ctx: RunContext) -> RunContext:
        if not self.step_prompt:
            return ctx
        system = STEP_SYSTEM if not ctx.problem.system else f"{ctx.problem.system}\n\n{STEP_SYSTEM}"
        return ctx.fork(problem=ctx.problem.model_copy(update={"system": system}))

    async def extend(self, ctx: RunContext, partial: Partial, *, key: str | None = None,
                     label: str = "step") -> Partial:
        """One more step of `partial` (raises BudgetExhausted before starting if spent)."""
        overrides = {**self.sampling_overrides(), "max_tokens": self.step_tokens}
        request = ctx.request(prefix=partial.text, stop=(self.delimiter,), logprobs=0,
                              affinity_key=key, **overrides)
        completion, node = await ctx.generate(request, parent=partial.node_id, label=label)
        step = completion.text.strip()
        by_delimiter = completion.stop_reason == self.delimiter
        text = partial.text + completion.text + (self.delimiter if by_delimiter else "")
        steps = [*partial.steps, step] if step else list(partial.steps)
        ended = completion.finish_reason == "stop" and not by_delimiter
        complete = (
            ended
            or is_complete_step(step, ctx.problem.answer_format)
            or len(steps) >= self.max_steps
            or (not step and by_delimiter and len(steps) > 0)
        )
        return Partial(text=text, steps=steps, scores=list(partial.scores), node_id=node,
                       complete=complete, finish_reason=completion.finish_reason,
                       tokens=partial.tokens + completion.usage.completion_tokens)

    async def score(self, ctx: RunContext, partial: Partial) -> Partial:
        """Fill in the PRM scores of the partial's steps (new steps only cost PRM calls)."""
        if not partial.steps or len(partial.scores) == len(partial.steps):
            return partial
        result = await ctx.score_steps(partial.steps, self.prm, parent=partial.node_id,
                                      aggregation=self.aggregation)
        if result is not None:
            partial.scores = list(result.scores)
        # refused by the budget: left unscored, its value counts the steps judged so far
        return partial

    async def step_and_score(self, ctx: RunContext, partial: Partial, *,
                             key: str | None = None, label: str = "step") -> Partial | None:
        """Extend then score; None when a budget refuses the generation."""
        try:
            child = await self.extend(ctx, partial, key=key, label=label)
        except BudgetExhausted:
            return None
        return await self.score(ctx, child)

    def spent(self, ctx: RunContext) -> bool:
        """Whether the search must stop: cancelled, or a generator or PRM budget ran out."""
        if ctx.cancelled or ctx.truncated:
            return True
        try:
            ctx.budget.check()
            ctx.budget.check_verifier_call()
        except BudgetExhausted:
            return True
        return False

    def to_candidate(self, ctx: RunContext, partial: Partial) -> Candidate:
        candidate = ctx.candidate_from_text(partial.text.strip(), partial.node_id,
                                            "stop" if partial.complete else "length")
        candidate.steps = list(partial.steps)
        candidate.completion_tokens = partial.tokens
        candidate.metadata.update(step_scores=partial.scores, complete=partial.complete,
                                  prm_score=partial.value(self.aggregation))
        return candidate

    async def finish(self, ctx: RunContext, partials: list[Partial]) -> list[Candidate]:
        """Candidates best first: complete before incomplete, then by outcome score (when an
        outcome verifier is set), then by aggregated PRM score; or by weighted vote."""
        unique = list({id(p): p for p in partials}.values())
        candidates = [self.to_candidate(ctx, p) for p in unique]
        if self.outcome_verifier is not None:
            await ctx.score_all([c for c in candidates if c.metadata["complete"]],
                                self.outcome_verifier)

        def rank(c: Candidate) -> tuple[bool, float, float]:
            outcome = c.score_value(self.outcome_verifier) if self.outcome_verifier else None
            return (not c.metadata["complete"], -(outcome or 0.0), -c.metadata["prm_score"])

        ordered = sorted(candidates, key=rank)
        if self.select == "weighted-vote" and ordered:
            ordered = weighted_order(ordered, ctx.problem.answer_format)
        if ordered and ordered[0].node_id:
            ctx.trace.add("select", label=f"{self.kind}: {self.select} of {len(ordered)}",
                          parents=[(ordered[0].node_id, "select")], considered=len(ordered))
        return ordered


def weighted_order(candidates: list[Candidate], answer_format: Any) -> list[Candidate]:
    """Reorder candidates so the answer with the most PRM weight comes first (weighted
    majority); within a group and for answerless candidates the given order holds."""
    groups = vote(candidates, answer_format, weight=lambda c: float(c.metadata["prm_score"]))
    ordered = [m for g in groups for m in g.members]
    seen = {id(c) for c in ordered}
    return ordered + [c for c in candidates if id(c) not in seen]
