"""Interval estimates and paired tests for bench results: pure functions, no I/O."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z_95 = 1.959963984540054
"""The two-sided 95% quantile of the standard normal distribution."""


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion (95% by default).

    Unlike the normal-approximation interval it stays inside [0, 1] and is not degenerate at
    0 or `trials` successes, which matters for the small problem counts a bench often has.

    Args:
        successes: Trials that succeeded (0 <= successes <= trials).
        trials: All trials; with none the interval is the whole of [0, 1].
        z: The normal quantile of the confidence level.

    Returns:
        (low, high), both within [0, 1].
    """
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return 0.0, 1.0
    share = successes / trials
    z2 = z * z
    centre = (share + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(share * (1 - share) / trials + z2 / (4 * trials * trials))
    half /= 1 + z2 / trials
    # the interval always holds the observed share (rounding could push an end past it at 0 or 1)
    return min(share, max(0.0, centre - half)), max(share, min(1.0, centre + half))


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs.

    Under the null hypothesis each discordant pair is equally likely to favour either side, so
    the smaller count follows Binomial(only_first + only_second, 1/2).

    Args:
        only_first: Pairs the first strategy got right and the second wrong.
        only_second: Pairs the second strategy got right and the first wrong.

    Returns:
        The p-value in [0, 1]; 1.0 when there are no discordant pairs.
    """
    if only_first < 0 or only_second < 0:
        raise ValueError("discordant counts cannot be negative")
    discordant = only_first + only_second
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(only_first, only_second) + 1))
    # exact integer arithmetic: the float quotient of two big ints is correctly rounded
    return min(1.0, 2 * tail / 2**discordant)


def paired_bootstrap_interval(
    first: Sequence[bool],
    second: Sequence[bool],
    *,
    resamples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(second) - mean(first) over paired outcomes.

    Problems are resampled with replacement, keeping each problem's two outcomes together, so
    the interval reflects how much the difference depends on which problems were drawn. The
    generator is seeded: the same inputs always give the same interval.

    Args:
        first: Outcome per problem of the first strategy.
        second: Outcome per problem of the second strategy, in the same problem order.
        resamples: Bootstrap resamples.
        seed: Seed of the resampling generator.
        level: Confidence level.

    Returns:
        (low, high) of the difference; (0.0, 0.0) when there are no pairs.
    """
    if len(first) != len(second):
        raise ValueError(f"paired outcomes differ in length: {len(first)} and {len(second)}")
    if not first:
        return 0.0, 0.0
    count = len(first)
    gains = sum(b and not a for a, b in zip(first, second, strict=True))
    losses = sum(a and not b for a, b in zip(first, second, strict=True))
    shares = [losses / count, (count - gains - losses) / count, gains / count]
    # a resample of paired outcomes is decided by how many losses, ties and gains it draws,
    # so drawing those counts is the same bootstrap without materialising every resample
    draws = np.random.default_rng(seed).multinomial(count, shares, size=resamples)
    means = (draws[:, 2] - draws[:, 0]) / count
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)
