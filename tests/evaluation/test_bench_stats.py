"""Wilson intervals, the exact McNemar test and the paired bootstrap, against known values."""

from __future__ import annotations

import math

import pytest

from threadloom.evaluation.stats import mcnemar_exact, paired_bootstrap_interval, wilson_interval


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [
        (5, 10, 0.2366, 0.7634),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (81, 263, 0.2553, 0.3662),
    ],
)
def test_wilson_interval_matches_published_values(
    successes: int, trials: int, low: float, high: float
) -> None:
    got = wilson_interval(successes, trials)
    assert got == pytest.approx((low, high), abs=1e-4)


def test_wilson_interval_edges() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(1, 1_000_000)
    assert 0.0 <= low < 1e-6 < high < 1e-5
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_mcnemar_exact_values() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    assert mcnemar_exact(1, 5) == pytest.approx(2 * 7 / 64)
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(6, 0) == mcnemar_exact(0, 6)
    # thousands of discordant pairs: exact integers, no float overflow
    tiny = mcnemar_exact(0, 2_000)
    assert 0.0 <= tiny < 1e-300 and not math.isnan(tiny)
    assert mcnemar_exact(1_000, 1_000) == 1.0


def test_paired_bootstrap_is_seeded_and_brackets_the_difference() -> None:
    first = [True] * 10 + [False] * 10
    second = [True] * 16 + [False] * 4
    interval = paired_bootstrap_interval(first, second)
    assert interval == paired_bootstrap_interval(first, second)
    low, high = interval
    assert low <= 0.3 <= high
    assert low > 0.0  # second wins on six problems and loses on none
    assert paired_bootstrap_interval(first, first) == (0.0, 0.0)
    assert paired_bootstrap_interval([], []) == (0.0, 0.0)
    with pytest.raises(ValueError):
        paired_bootstrap_interval([True], [])
