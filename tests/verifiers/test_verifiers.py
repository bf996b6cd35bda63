"""Rule verifiers: numeric, math-verify, regex, contains; the registry."""

from __future__ import annotations

import asyncio
import multiprocessing

import pytest

from threadloom import Candidate, ConfigError, Problem
from threadloom.orchestrator.runner import arun
from threadloom.types import Score
from threadloom.verifiers.math import MathVerifier
from threadloom.verifiers.numeric import NumericVerifier
from threadloom.verifiers.registry import make_verifier
from threadloom.workers.fake import FakeWorker


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


async def test_numeric_compares_numbers_beyond_the_float_range() -> None:
    # float() of a 400-digit Fraction raised OverflowError and ended a whole bench
    v = NumericVerifier()
    digits = "7" * 400
    wrong = await v.score(Problem(prompt="q", reference="5"), cand(digits, "number"))
    assert wrong.passed is False and len(wrong.detail) < 100
    right = await v.score(Problem(prompt="q", reference=digits), cand(f"so {digits}", "number"))
    assert right.passed is True
    near = await v.score(Problem(prompt="q", reference=digits + "1"), cand(digits + "2", "number"))
    assert near.passed is True  # within the relative tolerance, computed exactly
    assert (await v.score(Problem(prompt="q", reference="5"), cand("1e999999999"))).passed is False


def test_numeric_tolerances_must_be_finite() -> None:
    with pytest.raises(ConfigError, match="rel_tol"):
        NumericVerifier(rel_tol=float("nan"))
    with pytest.raises(ConfigError, match="abs_tol"):
        NumericVerifier(abs_tol=-1.0)


class Crashing:
    """A verifier with a bug that only some answers reach."""

    name = "crashing"
    aggregation = "min"

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    async def score(self, problem: Problem, candidate: Candidate) -> Score:
        self.calls += 1
        raise self.error

    async def score_steps(self, problem: Problem, steps: list[str]) -> list[float]:
        raise self.error


async def test_an_untyped_exception_in_score_becomes_a_failed_score() -> None:
    inner = Crashing(OverflowError("int too large to convert to float"))
    verifier = make_verifier(inner)
    assert verifier is inner and isinstance(verifier, Crashing)  # same object, same type
    score = await verifier.score(Problem(prompt="q"), Candidate(text="777"))
    assert inner.calls == 1
    assert score.passed is False and score.value == 0.0
    assert "OverflowError" in score.detail and len(score.detail) <= 200
    assert await inner.score_steps(Problem(prompt="q"), ["a", "b"]) == [0.0, 0.0]
    assert make_verifier(verifier) is verifier  # made total once


async def test_typed_errors_and_cancellation_still_propagate() -> None:
    with pytest.raises(ConfigError):
        await make_verifier(Crashing(ConfigError("bad rule"))).score(
            Problem(prompt="q"), Candidate(text="x")
        )
    with pytest.raises(asyncio.CancelledError):
        await make_verifier(Crashing(asyncio.CancelledError())).score(  # type: ignore[arg-type]
            Problem(prompt="q"), Candidate(text="x")
        )


async def test_a_run_whose_verifier_crashes_completes_with_failed_scores() -> None:
    crashing = Crashing(ValueError("Exceeds the limit (4300 digits)"))
    result = await arun("q", "best-of-n", worker=FakeWorker(("7" * 5000,)), verifier=crashing, n=2)
    assert crashing.calls == 2
    assert len(result.candidates) == 2
    assert all(c.scores["crashing"].passed is False for c in result.candidates)


def test_make_verifier_refuses_what_is_not_a_verifier() -> None:
    with pytest.raises(ConfigError, match="got int"):
        make_verifier(123)  # type: ignore[arg-type]


@pytest.mark.slow
async def test_a_math_check_that_overruns_is_killed_and_the_next_check_runs() -> None:
    v = MathVerifier(timeout_s=2)
    try:
        p = Problem(prompt="q", reference="2", answer_format="boxed")
        assert (await v.score(p, cand("\\boxed{2}", "boxed"))).passed is True
        busy = {child.pid for child in multiprocessing.active_children()}
        # a power of about 370 million digits: math-verify's SIGALRM cannot stop it inside GMP
        slow = await v.score(p, cand("\\boxed{9^{9^{9}}}", "boxed"))
        assert slow.passed is False and "timed out" in slow.detail
        for _ in range(50):  # the kill is immediate; the reaping takes a moment
            if not busy & {child.pid for child in multiprocessing.active_children()}:
                break
            await asyncio.sleep(0.1)
        assert not busy & {child.pid for child in multiprocessing.active_children()}
        assert (await v.score(p, cand("\\boxed{2}", "boxed"))).passed is True
    finally:
        v.close()


class Slotted:
    """A verifier that refuses new attributes: it is wrapped instead of patched."""

    __slots__ = ("limit", "name")

    def __init__(self) -> None:
        self.name = "slotted"
        self.limit = 3

    async def score(self, problem: Problem, candidate: Candidate) -> Score:
        return Score(value=1.0 / (len(candidate.text) - 3))  # ZeroDivisionError on 3 chars


async def test_a_verifier_that_refuses_attributes_is_wrapped_and_still_total() -> None:
    verifier = make_verifier(Slotted())
    assert verifier.name == "slotted" and verifier.limit == 3  # type: ignore[attr-defined]
    assert (await verifier.score(Problem(prompt="q"), Candidate(text="abcd"))).value == 1.0
    failed = await verifier.score(Problem(prompt="q"), Candidate(text="abc"))
    assert failed.passed is False and "ZeroDivisionError" in failed.detail
