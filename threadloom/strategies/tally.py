"""Ranking sampled candidates by a (possibly weighted) vote and recording it in the trace."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from threadloom.types import Candidate
from threadloom.verifiers.voting import VoteGroup, logprob_of, order_by_vote, vote

if TYPE_CHECKING:
    from threadloom.orchestrator.context import RunContext


def surest_member(group: VoteGroup) -> float:
    """A group's best mean log-probability: the default tie-break between equal votes."""
    return max(logprob_of(m) for m in group.members)


def rank_by_vote(
    ctx: RunContext,
    candidates: list[Candidate],
    *,
    weight: Callable[[Candidate], float] | None = None,
    tie_break: Callable[[VoteGroup], float] = surest_member,
    **trace_data: Any,
) -> list[Candidate]:
    """All candidates, the winning answer's first; a 'vote' node records the tally.

    Within a group the surest sample (mean log-probability) comes first; candidates without an
    answer come last. Groups of equal weight are ordered by `tie_break` (higher first; by
    default the group with the surest sample).

    Args:
        ctx: The run context, whose problem says how answers are written.
        candidates: The samples that vote.
        weight: A candidate's vote (default: one each).
        tie_break: Orders groups of equal weight.
        **trace_data: More data for the 'vote' node.
    """
    groups = vote(candidates, ctx.problem.answer_format, weight=weight, tie_break=tie_break)
    if groups:
        winner = groups[0]
        ctx.trace.add(
            "vote",
            label=f"{winner.key} with {_tally(winner.weight)} of {len(candidates)} samples",
            parents=[(m.node_id, "join") for m in winner.members if m.node_id],
            answer=winner.members[0].answer,
            votes={g.members[0].answer: _tally(g.weight) for g in groups},
            **trace_data,
        )
    return order_by_vote(candidates, groups)


def _tally(weight: float) -> int | float:
    """A group's weight as recorded: a count when it is whole, else rounded."""
    return int(weight) if weight.is_integer() else round(weight, 6)
