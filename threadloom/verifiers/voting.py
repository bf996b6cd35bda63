"""Voting and selection: pure functions over candidates, no I/O."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from threadloom.types import AnswerFormat, Candidate
from threadloom.verifiers.extract import parse_number

_SPACES = re.compile(r"\s+")
_DECIMAL_KEY_BITS = 332
"""Numbers with more bits than this (about 100 digits) are keyed in hex: cheap and unbounded."""


def answer_key(answer: str | None, answer_format: AnswerFormat = "text") -> str | None:
    """A canonical form of an answer, so that equal answers vote together.

    Numbers compare by value ('42', '42.0', '$42' agree); JSON answers (answer_format "json")
    by their value, whatever the key order and spacing; other answers by their text with case,
    spacing, surrounding '$' and trailing periods ignored.
    """
    if answer is None:
        return None
    if answer_format == "json":
        value = json_value(answer)
        if value is not None:
            return "json:" + json_key(value)
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


_MAX_JSON_CHARS = 100_000


def json_value(answer: str) -> Any | None:
    """The JSON value an answer holds, or None when it holds none (or too much to read)."""
    if len(answer) > _MAX_JSON_CHARS:
        return None
    try:
        return json.loads(answer)
    except (ValueError, RecursionError):
        return None


def json_key(value: Any) -> str:
    """A canonical text of a JSON value: keys sorted, no spacing, 2.0 written as 2."""

    def plain(item: Any) -> Any:
        if isinstance(item, float) and item.is_integer():
            return int(item)
        if isinstance(item, dict):
            return {str(k): plain(v) for k, v in item.items()}
        if isinstance(item, list):
            return [plain(v) for v in item]
        return item

    return json.dumps(plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass
class FieldVote:
    """The outcome of voting field by field over JSON object answers."""

    answer: dict[str, Any]
    """Each field's most voted value (fields that fewer than half the objects hold are left
    out)."""
    votes: dict[str, dict[str, int]]
    """For each field, the votes each value (as canonical JSON text) received."""
    voters: int
    """Candidates whose answer was a JSON object."""


def vote_fields(candidates: Sequence[Candidate]) -> FieldVote:
    """Majority vote on every top-level field of the candidates' JSON object answers.

    Two answers that agree on `name` but not on `age` still pool their votes for `name`, so
    the combined answer can be right where no single candidate is. Ties go to the value seen
    first. Answers that are not JSON objects do not vote.
    """
    votes: dict[str, dict[str, int]] = {}
    values: dict[str, dict[str, Any]] = {}
    voters = 0
    for candidate in candidates:
        value = json_value(candidate.answer) if candidate.answer is not None else None
        if not isinstance(value, dict):
            continue
        voters += 1
        for field_name, field_value in value.items():
            key = json_key(field_value)
            counts = votes.setdefault(str(field_name), {})
            counts[key] = counts.get(key, 0) + 1
            values.setdefault(str(field_name), {}).setdefault(key, field_value)
    answer: dict[str, Any] = {}
    for field_name, counts in votes.items():
        if 2 * sum(counts.values()) < voters:
            continue
        best = max(counts, key=lambda k: counts[k])  # first of the most voted
        answer[field_name] = values[field_name][best]
    return FieldVote(answer=answer, votes=votes, voters=voters)


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
    keys: dict[str | None, str | None] = {}  # samples that agree mostly write the same text
    for candidate in candidates:
        answer = candidate.answer
        if answer in keys:
            key = keys[answer]
        else:
            key = keys[answer] = answer_key(answer, answer_format)
        if key is None:
            continue
        group = groups.get(key)
        if group is None:
            group = groups[key] = VoteGroup(key=key, weight=0.0)
        group.weight += 1.0 if weight is None else weight(candidate)
        group.members.append(candidate)
    ranked = list(groups.values())
    if len(ranked) > 1:
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


def order_by_vote(candidates: Sequence[Candidate], groups: Sequence[VoteGroup]) -> list[Candidate]:
    """All candidates in the order of their groups' rank (the surest sample first within a
    group, by mean log-probability), then those that did not vote, in their order."""
    ordered = [m for g in groups for m in sorted(g.members, key=logprob_of, reverse=True)]
    if len(ordered) < len(candidates):
        voted = {id(c) for c in ordered}
        ordered.extend(c for c in candidates if id(c) not in voted)
    return ordered


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
