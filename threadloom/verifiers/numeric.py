"""numeric: the final number against the reference, within a tolerance."""

from __future__ import annotations

import math
from fractions import Fraction

from threadloom.errors import ConfigError
from threadloom.types import Candidate, Problem, Score
from threadloom.verifiers.base import passed, unjudged
from threadloom.verifiers.extract import extract_answer, parse_number

_SHOWN_CHARS = 60
"""Characters of the answer quoted in a score's detail."""


class NumericVerifier:
    """Compares the candidate's final number with the problem's reference.

    Without a reference it cannot judge correctness: a final number scores 1.0 (above no
    number at all, which is what a reference-free selection can know) with `judged=False`,
    so displays show "no reference" instead of a score.

    Args:
        rel_tol: Relative tolerance for a match.
        abs_tol: Absolute tolerance for a match.
    """

    def __init__(self, *, rel_tol: float = 1e-6, abs_tol: float = 1e-9, name: str = "numeric"):
        for label, tolerance in (("rel_tol", rel_tol), ("abs_tol", abs_tol)):
            if not math.isfinite(tolerance) or tolerance < 0:
                raise ConfigError(f"{label} must be a finite number >= 0, got {tolerance!r}")
        self.rel_tol = rel_tol
        self.abs_tol = abs_tol
        self.name = name

    async def score(self, problem: Problem, candidate: Candidate) -> Score:
        answer = candidate.answer
        if answer is None or parse_number(answer) is None:
            answer = extract_answer(candidate.text, "number")
        value = parse_number(answer) if answer is not None else None
        if answer is None or value is None:
            return passed(False, "no number found in the answer")
        shown = answer if len(answer) <= _SHOWN_CHARS else f"{answer[:_SHOWN_CHARS]}…"
        if problem.reference is None:
            return unjudged(f"gives the number {shown} (no reference to judge it by)")
        expected = parse_number(problem.reference)
        if expected is None:
            expected_text = extract_answer(problem.reference, "number")
            expected = parse_number(expected_text) if expected_text else None
        if expected is None:
            return passed(False, f"the reference {problem.reference!r} is not a number")
        ok = numbers_match(value, expected, rel_tol=self.rel_tol, abs_tol=self.abs_tol)
        return passed(ok, f"{shown} {'==' if ok else '!='} {problem.reference}")


def numbers_match(value: Fraction, expected: Fraction, *, rel_tol: float, abs_tol: float) -> bool:
    """Whether two numbers agree within the tolerances, computed exactly: a value far beyond
    the float range (a 400-digit answer) compares without overflowing."""
    if value == expected:
        return True
    tolerance = max(Fraction(abs_tol), Fraction(rel_tol) * abs(expected))
    return abs(value - expected) <= tolerance
