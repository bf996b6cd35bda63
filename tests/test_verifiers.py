"""Rule verifiers: numeric, math-verify, regex, contains; the registry."""

from __future__ import annotations

import pytest

from threadloom import Candidate, ConfigError, Problem
from threadloom.verifiers.math import MathVerifier
from threadloom.verifiers.numeric import NumericVerifier
from threadloom.verifiers.registry import make_verifier


def cand(text: str, fmt: str = "auto") -> Candidate:
    from threadloom.verifiers.extract import extract_answer

    return Candidate(text=text, answer=extract_answer(text, fmt))  # type: ignore[arg-type]


async def test_numeric_with_reference() -> None:
    v = NumericVerifier()
    p = Problem(prompt="q", reference="1,234", answer_format="number")
    assert (await v.score(p, cand("so it is 1234.0", "number"))).passed is True
    assert (await v.score(p, cand("so it is 1235", "number"))).passed is False
    assert (await v.score(p, cand("no idea", "number"))).passed is False


async def test_numeric_without_reference_checks_format() -> None:
    v = NumericVerifier()
    p = Problem(prompt="q")
    assert (await v.score(p, cand("it is 7"))).value == 1.0
    assert (await v.score(p, cand("no number"))).value == 0.0


async def test_math_verify_equivalence() -> None:
    v = MathVerifier(timeout_s=60)
    try:
        p = Problem(prompt="q", reference="\\frac{1}{2}", answer_format="boxed")
        assert (await v.score(p, cand("thus \\boxed{0.5}", "boxed"))).passed is True
        assert (await v.score(p, cand("thus \\boxed{\\frac{2}{4}}", "boxed"))).passed is True
        assert (await v.score(p, cand("thus \\boxed{3}", "boxed"))).passed is False
        assert (await v.score(p, cand("gibberish {{{", "boxed"))).passed is False
    finally:
        v.close()


async def test_regex_and_contains() -> None:
    p = Problem(prompt="q")
    regex = make_verifier(r"regex:^\d+$")
    assert (await regex.score(p, cand("42"))).passed is True
    assert (await regex.score(p, cand("about 42"))).passed is False
    contains = make_verifier("contains:Paris,France")
    score = await contains.score(p, cand("Paris is lovely"))
    assert score.passed is False and score.value == 0.5


def test_registry_errors() -> None:
    with pytest.raises(ConfigError, match="valid verifiers"):
        make_verifier("astrology")
    with pytest.raises(ConfigError, match="needs an argument"):
        make_verifier("regex")
    with pytest.raises(ConfigError, match="invalid regular expression"):
        make_verifier("regex:([")
    with pytest.raises(ConfigError, match="takes no argument"):
        make_verifier("numeric:5")
