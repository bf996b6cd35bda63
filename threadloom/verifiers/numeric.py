"""numeric: the final number against the reference, within a tolerance."""

from __future__ import annotations

import functools
import math
from fractions import Fraction

from threadloom.errors import ConfigError
from threadloom.types import Candidate, Problem, Score
from threadloom.verifiers.base import passed, unjudged
from threadloom.verifiers.extract import MAX_NUMBER_CHARS, extract_answer, parse_number

_SHOWN_CHARS = 60
"""Characters of the answer quoted in a score's detail."""
_KEPT_ANSWERS = 256
"""Distinct answers whose number and verdict a verifier keeps: a run's samples mostly agree,
so each distinct answer is read once."""
_KEPT_CHARS = 2 * MAX_NUMBER_CHARS
"""Longer answers are read every time, so no answer can make the verifier keep large text."""


class NumericVerifier:
    """Compares the candidate's final number with the problem's reference.

    Without a reference it cannot judge correctness: a final number scores 1.0 (above no
    number at all, which is what a reference-free selection can know) with `judged=False`,
    so displays show "no reference" instead of a score.

    Each distinct answer is read as a number, and judged against a reference, once: the
    verifier keeps the last few hundred (a verifier named by a string is made per run).

    Args:
        rel_tol: Relative tolerance for a match.
        abs_tol: Absolute tolerance for a match.
    """

    runs_inline = True  # score never waits: a run scores candidates in line

    def __init__(self, *, rel_tol: float = 1e-6, abs_tol: float = 1e-9, name: str = "numeric"):
        for label, tolerance in (("rel_tol", rel_tol), ("abs_tol", abs_tol)):
            if not math.isfinite(tolerance) or tolerance < 0:
                raise ConfigError(f"{label} must be a finite number >= 0, got {tolerance!r}")
        self.rel_tol = rel_tol
        self.abs_tol = abs_tol
        self.name = name
        # plain functions wrapped per instance: nothing kept refers back to the verifier
        self._numbers = functools.lru_cache(maxsize=_KEPT_ANSWERS)(parse_number)
        self._verdicts = functools.lru_cache(maxsize=_KEPT_ANSWERS)(judge_number)

    def _number(self, text: str) -> Fraction | None:
        return self._numbers(text) if len(text) <= _KEPT_CHARS else parse_number(text)

    async def score(self, problem: Problem, candidate: Candidate) -> Score:
        answer = candidate.answer
        if answer is None or self._number(answer) is None:
            answer = extract_answer(candidate.text, "number")
            if answer is None or self._number(answer) is None:
                return passed(False, "no number found in the answer")
        judge = self._verdicts if len(answer) <= _KEPT_CHARS else judge_number
        return judge(answer, problem.reference, self.rel_tol, self.abs_tol)


def judge_number(answer: str, reference: str | None, rel_tol: float, abs_tol: float) -> Score:
    """The verdict on an answer that holds a number: equal to the reference's number within
    the tolerances, or unjudged when there is no reference."""
    value = parse_number(answer)
    if value is None:
        return passed(False, "no number found in the answer")
    shown = answer if len(answer) <= _SHOWN_CHARS else f"{answer[:_SHOWN_CHARS]}…"
    if reference is None:
        return unjudged(f"gives the number {shown} (no reference to judge it by)")
    expected = parse_number(reference)
    if expected is None:
        expected_text = extract_answer(reference, "number")
        expected = parse_number(expected_text) if expected_text else None
    if expected is None:
        return passed(False, f"the reference {reference!r} is not a number")
    ok = numbers_match(value, expected, rel_tol=rel_tol, abs_tol=abs_tol)
    return passed(ok, f"{shown} {'==' if ok else '!='} {reference}")


def numbers_match(value: Fraction, expected: Fraction, *, rel_tol: float, abs_tol: float) -> bool:
    """Whether two numbers agree within the tolerances, computed exactly: a value far beyond
    the float range (a 400-digit answer) compares without overflowing."""
    if value == expected:
        return True
    tolerance = max(Fraction(abs_tol), Fraction(rel_tol) * abs(expected))
    return abs(value - expected) <= tolerance
