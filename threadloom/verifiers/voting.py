"""Voting and selection: pure functions over candidates, no I/O."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from threadloom.types import AnswerFormat, Candidate
from threadloom.verifiers.extract import parse_number

_SPACES = re.compile(r"\s+")
_DECIMAL_KEY_BITS = 332
"""Numbers with more bits than this (about 100 digits) are keyed in hex: cheap and unbounded."""


def answer_key(answer: str | None, answer_format: AnswerFormat = "text") -> str | None:
    """A canonical form of an answer, so that equal answers vote together.

    Numbers compare by value ('42', '42.0', '$42' agree); other answers by their text with
    case, spacing, surrounding '$' and trailing periods ignored.
    """
    if answer is None:
        return None
    text = answer.strip().strip("$").strip().rstrip(".").strip()
    if not text:
        return None
    if answer_format != "code":
        number = parse_number(text)
        if number is not None:
            return number_key(number)
        text = text.lower()
    return _SPACES.sub(" " if answer_format == "code" else "", text)


def number_key(number: Fraction) -> str:
    """The vote key of a number: '#42', '#3/4'; huge values in hex ('#0x…') so that no decimal
    conversion of a model-written digit run can be slow or hit Python's digit limit."""
    if max(number.numerator.bit_length(), number.denominator.bit_length()) <= _DECIMAL_KEY_BITS:
        return f"#{number}"
    return f"#{number.numerator:#x}/{number.denominator:#x}"


@dataclass
class VoteGroup:
    key: str
    weight: float
    members: list[Candidate] = field(default_factory=list)


def vote(
    candidates: Sequence[Candidate],
    answer_format: AnswerFormat = "text",
    weight: Callable[[Candidate], float] | None = None,
    tie_break: Callable[[VoteGroup], float] | None = None,
) -> list[VoteGroup]:
    """Group candidates by answer and rank the groups: most weight first.

    Candidates without an answer do not vote. `weight` defaults to one vote each; `tie_break`
    orders groups of equal weight (higher first), then the earliest group wins.
    """
    groups: dict[str, VoteGroup] = {}
    for candidate in candidates:
        key = answer_key(candidate.answer, answer_format)
        if key is None:
            continue
        group = groups.setdefault(key, VoteGroup(key=key, weight=0.0))
        group.weight += 1.0 if weight is None else weight(candidate)
        group.members.append(candidate)
    ranked = list(groups.values())
    order = {g.key: i for i, g in enumerate(ranked)}
    ranked.sort(
        key=lambda g: (
            -round(g.weight, 12),
            -(tie_break(g) if tie_break else 0.0),
            order[g.key],
        )
    )
    for group in ranked:
        for member in group.members:
            member.votes = len(group.members)
    return ranked


def logprob_of(candidate: Candidate) -> float:
    """Mean token log-probability, or -inf when unknown."""
    return candidate.mean_logprob if candidate.mean_logprob is not None else float("-inf")


def rank_by_score(candidates: Sequence[Candidate], verifier: str | None) -> list[Candidate]:
    """Candidates best first: by verifier score, then mean log-probability, then order."""
    indexed = list(enumerate(candidates))
    indexed.sort(
        key=lambda pair: (
            -(pair[1].score_value(verifier) or 0.0),
            -logprob_of(pair[1]),
            pair[0],
        )
    )
    return [c for _, c in indexed]
