"""When has a vote settled? Stopping rules for adaptive sampling: pure functions, no I/O."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from threadloom.errors import ConfigError

StopRule = Literal["beta", "window", "votes", "margin"]
"""beta: the leader beats the runner-up with posterior probability >= confidence (a Beta
posterior over the top two answers' shares, as in Adaptive-Consistency); window: the last `window`
answers all agree (Early-Stopping Self-Consistency); votes: some answer has `votes` votes, however
many others it has (the first answer to be repeated, for 2); margin: only when the leader cannot
be overtaken by the samples left (always applied as well)."""


def top_two(answers: Sequence[str | None]) -> tuple[str | None, int, int]:
    """(leading answer, its votes, the runner-up's votes); samples without an answer abstain.

    Equal counts go to the answer seen first.
    """
    counts: dict[str, int] = {}
    for answer in answers:
        if answer is not None:
            counts[answer] = counts.get(answer, 0) + 1
    if not counts:
        return None, 0, 0
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    leader, first = ranked[0]
    second = ranked[1][1] if len(ranked) > 1 else 0
    return leader, first, second


def leader_probability(first: int, second: int) -> float:
    """Posterior probability that the leading answer is the more likely of the top two.

    With a uniform prior, the leader's share of the top two is Beta(first + 1, second + 1);
    for whole counts the chance that it exceeds one half is a binomial tail:
    P(Binomial(first + second + 1, 1/2) <= first).
    """
    if first < 0 or second < 0:
        raise ConfigError("vote counts cannot be negative")
    trials = first + second + 1
    tail = sum(math.comb(trials, k) for k in range(first + 1))
    return tail / 2**trials


def cannot_be_overtaken(first: int, second: int, remaining: int) -> bool:
    """True when the runner-up could not pass the leader even if every remaining sample
    voted for it (a tie counts as not overtaken only when the leader is strictly ahead)."""
    return first > 0 and first - second > remaining


def settled(
    answers: Sequence[str | None],
    *,
    rule: StopRule,
    confidence: float,
    window: int,
    remaining: int,
    votes: int = 2,
) -> bool:
    """Whether sampling can stop: the rule fires, or the leader cannot be overtaken.

    Args:
        answers: The vote keys of the finished samples in order of finishing (None: no answer).
        rule: See `StopRule`.
        confidence: The beta rule's threshold, in (0.5, 1).
        window: How many latest answers must agree for the window rule.
        remaining: Samples that may still be drawn.
        votes: The votes the leader needs for the votes rule.
    """
    _, first, second = top_two(answers)
    if cannot_be_overtaken(first, second, remaining):
        return True
    if rule == "beta":
        return first > 0 and leader_probability(first, second) >= confidence
    if rule == "window":
        latest = answers[-window:]
        return len(latest) == window and latest[0] is not None and len(set(latest)) == 1
    if rule == "votes":
        return first >= votes
    if rule == "margin":
        return False
    raise ConfigError(f"unknown stopping rule {rule!r}; use beta, window, votes or margin")
