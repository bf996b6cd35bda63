"""Strategy specs are parsed once and kept: what is kept must never leak between calls."""

from __future__ import annotations

import pytest

from threadloom.errors import ConfigError
from threadloom.strategies import registry
from threadloom.strategies.best_of_n import BestOfN
from threadloom.strategies.registry import make_strategy, parse_spec, strategy_class


def _best_of_n(spec: str, **overrides: object) -> BestOfN:
    made = make_strategy(spec, **overrides)
    assert isinstance(made, BestOfN)
    return made


def test_overrides_of_one_call_do_not_reach_the_next() -> None:
    first = _best_of_n("best-of-n:n=5", temperature=0.3, verifier="numeric")
    again = _best_of_n("best-of-n:n=5")
    assert (first.n, first.temperature, first.verifier) == (5, 0.3, "numeric")
    assert (again.n, again.temperature, again.verifier) == (5, None, None)
    assert _best_of_n("best-of-n", n=3).n == 3
    assert _best_of_n("best-of-n").n == 8


def test_each_build_is_a_new_strategy() -> None:
    first = _best_of_n("best-of-n:n=4")
    second = _best_of_n("best-of-n:n=4")
    assert first == second and first is not second
    first.n = 9
    assert second.n == 4 and _best_of_n("best-of-n:n=4").n == 4


def test_a_parsed_spec_can_be_changed_by_its_caller() -> None:
    _, options = parse_spec("Best_Of_N:n=8,temperature=0.5")
    options["n"] = 1
    options["extra"] = True
    assert parse_spec("Best_Of_N:n=8,temperature=0.5") == (
        "best-of-n",
        {"n": 8, "temperature": 0.5},
    )


def test_a_bad_spec_is_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(ConfigError, match="key=value"):
            make_strategy("best-of-n:n")
        with pytest.raises(ConfigError, match="unknown strategy"):
            make_strategy("best-of-nothing")
        with pytest.raises(ConfigError, match="no option"):
            make_strategy("best-of-n:width=3")


def test_a_long_spec_is_read_the_same_and_not_kept() -> None:
    spec = "best-of-n:n=2," + ",".join(["temperature=0.5"] * 40)
    assert len(spec) > registry._CACHED_SPEC_CHARS
    kept = registry._read_spec.cache_info().currsize
    assert parse_spec(spec) == ("best-of-n", {"n": 2, "temperature": 0.5})
    assert make_strategy(spec).temperature == 0.5
    assert registry._read_spec.cache_info().currsize == kept


def test_a_built_in_kind_resolves_to_its_class_under_any_spelling() -> None:
    assert strategy_class("best-of-n") is BestOfN
    assert strategy_class(" Best_Of_N ") is BestOfN
