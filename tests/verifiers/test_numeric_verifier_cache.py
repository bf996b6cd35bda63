"""The numeric verifier reads each distinct answer once; what it keeps never changes a verdict."""

from __future__ import annotations

import pytest

import threadloom as tl
from threadloom import Candidate, Problem
from threadloom.verifiers import extract, numeric
from threadloom.verifiers.numeric import NumericVerifier


def _candidate(text: str) -> Candidate:
    return Candidate(text=text, answer=extract.extract_answer(text, "number"))


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text the numeric verifier parses as a number (set up before it is made)."""
    seen: list[str] = []
    original = extract.parse_number

    def counting(text: str) -> object:
        seen.append(text)
        return original(text)

    monkeypatch.setattr(numeric, "parse_number", counting)
    return seen


async def test_agreeing_answers_are_read_and_judged_once(reads: list[str]) -> None:
    verifier = NumericVerifier()
    problem = Problem(prompt="q", reference="42")
    scores = [await verifier.score(problem, _candidate(f"sample {i}: 42")) for i in range(8)]
    assert all(s.passed is True for s in scores)
    # for eight samples: the answer read once, once more for its verdict, the reference once
    assert reads == ["42", "42", "42"]


async def test_what_is_kept_depends_on_the_reference_and_tolerance() -> None:
    verifier = NumericVerifier(rel_tol=0.01)
    answer = _candidate("it is 100.5")
    assert (await verifier.score(Problem(prompt="q", reference="100"), answer)).passed is True
    assert (await verifier.score(Problem(prompt="q", reference="90"), answer)).passed is False
    unjudged = await verifier.score(Problem(prompt="q"), answer)
    assert unjudged.judged is False and unjudged.value == 1.0
    strict = NumericVerifier()
    assert (await strict.score(Problem(prompt="q", reference="100"), answer)).passed is False
    assert (await verifier.score(Problem(prompt="q", reference="100"), answer)).passed is True


async def test_an_answer_without_a_number_falls_back_to_the_text_each_time() -> None:
    verifier = NumericVerifier()
    problem = Problem(prompt="q", reference="7")
    for _ in range(2):
        worded = Candidate(text="seven, that is 7", answer="seven")
        assert (await verifier.score(problem, worded)).passed is True
        empty = Candidate(text="no idea", answer="no idea")
        score = await verifier.score(problem, empty)
        assert score.passed is False and "no number" in score.detail


async def test_long_answers_are_judged_but_not_kept(reads: list[str]) -> None:
    verifier = NumericVerifier()
    problem = Problem(prompt="q", reference="5")
    huge = "9" * 900 + " " * (2 * extract.MAX_NUMBER_CHARS)
    for _ in range(2):
        score = await verifier.score(problem, Candidate(text=huge, answer=huge))
        assert score.passed is False
    assert verifier._numbers.cache_info().currsize == 0
    assert verifier._verdicts.cache_info().currsize == 0
    assert reads.count(huge) == 4  # twice per score (answer, verdict): nothing kept it


async def test_a_run_with_the_numeric_verifier_scores_every_sample() -> None:
    result = await tl.arun(
        "What is 6 * 7?", "best-of-n", n=4, worker=tl.FakeWorker(["It is 42", "It is 41"]),
        verifier="numeric", reference="42",
    )
    assert result.answer == "42"
    passed = sorted(bool(c.scores["numeric"].passed) for c in result.candidates)
    assert passed == [False, False, True, True]
