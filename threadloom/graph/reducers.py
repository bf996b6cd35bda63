"""Reducers: pure functions that combine the candidates of a join's inputs, best first.

No I/O and no run context: scoring (a verifier's work) happens before a reducer is called, and
recording the outcome in the trace after, both in the Strategy adapters of
`threadloom.strategies.reducers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from threadloom.types import AnswerFormat, Candidate
from threadloom.verifiers.voting import VoteGroup, logprob_of, order_by_vote, rank_by_score
from threadloom.verifiers.voting import vote as group_votes


def concat(inputs: Sequence[Candidate]) -> list[Candidate]:
    """Every input, unchanged, in the order received."""
    return list(inputs)


def select(inputs: Sequence[Candidate], verifier: str | None) -> list[Candidate]:
    """The inputs best first by the named verifier's score (already on the candidates), then
    by mean log-probability, then by order received."""
    return rank_by_score(inputs, verifier)


@dataclass(frozen=True)
class VoteOutcome:
    """What a vote decided."""

    ranked: list[Candidate]
    """Every input: the winning group's members first (most likely first), then the other
    groups in rank order, then the candidates without an answer."""
    groups: list[VoteGroup]
    """The answer groups, most weight first (empty when no input had an answer)."""


def vote(
    inputs: Sequence[Candidate], answer_format: AnswerFormat, weight_by: str | None = None
) -> VoteOutcome:
    """Majority vote over the inputs' answers; `weight_by` names a verifier whose scores
    (already on the candidates) weight the votes, a missing score counting zero."""

    def weight(candidate: Candidate) -> float:
        if weight_by is None:
            return 1.0
        return candidate.score_value(weight_by) or 0.0

    def tie_break(group: VoteGroup) -> float:
        return max(logprob_of(m) for m in group.members)

    groups = group_votes(inputs, answer_format, weight=weight, tie_break=tie_break)
    return VoteOutcome(ranked=order_by_vote(inputs, groups), groups=groups)
