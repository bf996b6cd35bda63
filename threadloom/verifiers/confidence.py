"""Confidence of a sample from its token log-probabilities: pure functions, no I/O.

Every measure is a mean log-probability (at most 0; higher is surer) over some of the sample's
tokens, so measures of different samples compare directly and `exp(measure)` is a geometric-mean
token probability in (0, 1], usable as a vote weight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from threadloom.errors import ConfigError
from threadloom.types import Candidate, TokenLogprob

ConfidenceMeasure = Literal["mean", "lowest-group", "tail"]
"""mean: all tokens; lowest-group: the least sure window of `group` consecutive tokens;
tail: the last `group` tokens (where the answer is written)."""

DEFAULT_GROUP = 32
"""Tokens per window of the lowest-group and tail measures."""


def _finite(values: Sequence[float]) -> list[float]:
    # a worker may report -inf (or NaN) for a token it was forced to emit; treat it as very unsure
    return [v if math.isfinite(v) else -100.0 for v in values]


def group_means(logprobs: Sequence[float], group: int = DEFAULT_GROUP) -> list[float]:
    """Mean log-probability of every window of `group` consecutive tokens (sliding by one).

    A sequence shorter than `group` is one window.
    """
    if group < 1:
        raise ConfigError(f"a confidence group must hold at least 1 token, got {group}")
    values = _finite(logprobs)
    if not values:
        return []
    if len(values) <= group:
        return [sum(values) / len(values)]
    window = sum(values[:group])
    means = [window / group]
    for i in range(group, len(values)):
        window += values[i] - values[i - group]
        means.append(window / group)
    return means


def confidence(
    logprobs: Sequence[float],
    measure: ConfidenceMeasure = "lowest-group",
    group: int = DEFAULT_GROUP,
) -> float | None:
    """One sample's confidence from its tokens' log-probabilities; None without tokens.

    Args:
        logprobs: The sampled tokens' log-probabilities, in order.
        measure: Which tokens count (see `ConfidenceMeasure`).
        group: Window size of the lowest-group and tail measures.
    """
    values = _finite(logprobs)
    if not values:
        return None
    if measure == "mean":
        return sum(values) / len(values)
    if measure == "lowest-group":
        return min(group_means(values, group))
    if measure == "tail":
        tail = values[-group:]
        return sum(tail) / len(tail)
    raise ConfigError(f"unknown confidence measure {measure!r}; use mean, lowest-group or tail")


def token_values(logprobs: Sequence[TokenLogprob] | None) -> list[float]:
    """The sampled tokens' log-probabilities of a completion (empty when not reported)."""
    return [t.logprob for t in logprobs or ()]


def candidate_confidence(candidate: Candidate) -> float | None:
    """The confidence stored on a candidate (metadata['confidence']), if any."""
    value = candidate.metadata.get("confidence")
    return float(value) if isinstance(value, (int, float)) else None


def confidence_weight(candidate: Candidate) -> float:
    """A vote weight in [0, 1]: the geometric-mean token probability behind the confidence."""
    value = candidate_confidence(candidate)
    return 0.0 if value is None else math.exp(min(0.0, value))


def keep_most_confident(candidates: Sequence[Candidate], share: float) -> list[Candidate]:
    """The most confident `share` of the candidates (at least one), in their original order.

    Candidates without a confidence rank last.
    """
    if not 0.0 < share <= 1.0:
        raise ConfigError(f"the share of candidates kept must be in (0, 1], got {share}")
    if not candidates:
        return []
    count = max(1, math.ceil(share * len(candidates)))
    ranked = sorted(
        range(len(candidates)),
        key=lambda i: -(candidate_confidence(candidates[i]) or -math.inf),
    )
    chosen = set(ranked[:count])
    return [c for i, c in enumerate(candidates) if i in chosen]


def threshold_from_warmup(confidences: Sequence[float], keep: float) -> float:
    """The confidence below which a new sample is cut, learned from warm-up samples.

    A sample is kept when it is at least as sure as the least sure of the `keep` share of the
    warm-up samples (DeepConf's online filter: keep=0.1 keeps only the surest tenth).
    """
    if not 0.0 < keep <= 1.0:
        raise ConfigError(f"the share of samples kept must be in (0, 1], got {keep}")
    if not confidences:
        raise ConfigError("a confidence threshold needs at least one warm-up sample")
    ranked = sorted(confidences, reverse=True)
    return ranked[max(1, math.ceil(keep * len(ranked))) - 1]
