"""Ranking sampled candidates by a (possibly weighted) vote and recording it in the trace."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from threadloom.types import Candidate
from threadloom.verifiers.voting import VoteGroup, logprob_of, vote

if TYPE_CHECKING:
    from threadloom.orchestrator.context import RunContext


def rank_by_vote(
    ctx: RunContext,
    candidates: list[Candidate],
    *,
    weight: Callable[[Candidate], float] | None = None,
    **trace_data: Any,
) -> list[Candidate]:
    """All candidates, the winning answer's first; a 'vote' node records the tally.

    Within a group the surest sample (mean log-probability) comes first; candidates without an
    answer come last. Ties between groups go to the group with the surest sample.
    """

    def tie_break(group: VoteGroup) -> float:
        return max(logprob_of(m) for m in group.members)

    groups = vote(candidates, ctx.problem.answer_format, weight=weight, tie_break=tie_break)
    ordered = [m for g in groups for m in sorted(g.members, key=logprob_of, reverse=True)]
    seen = {id(c) for c in ordered}
    ordered.extend(c for c in candidates if id(c) not in seen)
    if groups:
        winner = groups[0]
        ctx.trace.add(
            "vote",
            label=f"{winner.key} with {winner.weight:.3g} of {len(candidates)} samples",
            parents=[(m.node_id, "join") for m in winner.members if m.node_id],
            answer=winner.members[0].answer,
            votes={g.members[0].answer: round(g.weight, 6) for g in groups},
            **trace_data,
        )
    return ordered
