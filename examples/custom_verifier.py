"""A verifier of your own: prefer answers that satisfy a constraint you know.

A verifier is any object with a `name` and an async `score(problem, candidate) -> Score`.
Pass it to a run and best-of-n ranks candidates by it. A verifier must never raise on what a
model wrote: an answer it cannot read is a low score, not an exception.

    python examples/custom_verifier.py "Name an even number between 10 and 20."
    python examples/custom_verifier.py "Name an even number between 10 and 20." \
        --worker "fake:The answer is 13|The answer is 14|The answer is 25"
"""

from __future__ import annotations

import argparse
from fractions import Fraction

import threadloom
from threadloom import Candidate, Problem, Score


class EvenBetween:
    """Passes an answer that is an even whole number in [low, high]."""

    def __init__(self, low: int, high: int) -> None:
        self.name = "even-between"
        self.low = low
        self.high = high

    async def score(self, problem: Problem, candidate: Candidate) -> Score:
        answer = (candidate.answer or "").strip()
        if not answer or len(answer) > 40:
            return Score(value=0.0, passed=False, detail="no short answer")
        try:
            number = Fraction(answer)
        except (ValueError, ZeroDivisionError):
            return Score(value=0.0, passed=False, detail=f"not a number: {answer[:40]!r}")
        ok = number.denominator == 1 and number % 2 == 0 and self.low <= number <= self.high
        return Score(value=1.0 if ok else 0.0, passed=ok, detail=f"{answer} checked")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question")
    parser.add_argument("--worker", default=None, help="worker spec (default: the bundled model)")
    parser.add_argument("-n", type=int, default=8)
    args = parser.parse_args()
    result = threadloom.run(
        args.question, f"best-of-n:n={args.n}", worker=args.worker,
        verifier=EvenBetween(10, 20), seed=0,
    )
    best = result.candidates[0] if result.candidates else None
    verdict = best.scores.get("even-between") if best else None
    print(f"answer: {result.answer}  verdict: {verdict.passed if verdict else None}")


if __name__ == "__main__":
    main()
