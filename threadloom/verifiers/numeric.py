"""numeric: the final number against the reference, within a tolerance."""

from __future__ import annotations

from threadloom.types import Candidate, Problem, Score
from threadloom.verifiers.base import passed
from threadloom.verifiers.extract import extract_answer, parse_number


class NumericVerifier:
    """Compares the candidate's final number with the problem's reference.

    Without a reference it checks only that a final number is given (score 1.0 when one is),
    which is what a reference-free selection can know.

    Args:
        rel_tol: Relative tolerance for a match.
        abs_tol: Absolute tolerance for a match.
    """

    def __init__(self, *, rel_tol: float = 1e-6, abs_tol: float = 1e-9, name: str = "numeric"):
        self.rel_tol = rel_tol
        self.abs_tol = abs_tol
        self.name = name

    async def score(self, problem: Problem, candidate: Candidate) -> Score:
        answer = candidate.answer
        if answer is None or parse_number(answer) is None:
            answer = extract_answer(candidate.text, "number")
        value = parse_number(answer) if answer is not None else None
        if value is None:
            return passed(False, "no number found in the answer")
        if problem.reference is None:
            return Score(value=1.0, passed=None, detail=f"gives the number {answer} (no reference)")
        expected = parse_number(problem.reference)
        if expected is None:
            expected_text = extract_answer(problem.reference, "number")
            expected = parse_number(expected_text) if expected_text else None
        if expected is None:
            return passed(False, f"the reference {problem.reference!r} is not a number")
        diff = abs(float(value) - float(expected))
        ok = value == expected or diff <= max(self.abs_tol, self.rel_tol * abs(float(expected)))
        return passed(ok, f"{answer} {'==' if ok else '!='} {problem.reference}")
