"""The Verifier protocol and the process-verifier extension."""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

from threadloom.types import Candidate, Problem, Score

StepAggregation = Literal["min", "prod", "last", "mean"]


@runtime_checkable
class Verifier(Protocol):
    """Scores a candidate solution of a problem. Rule verifiers are pure and fast."""

    name: str

    async def score(self, problem: Problem, candidate: Candidate) -> Score:
        """Judge `candidate`; higher `Score.value` is better."""
        ...


@runtime_checkable
class ProcessVerifier(Verifier, Protocol):
    """A verifier that can also score each step of a partial solution."""

    aggregation: StepAggregation

    async def score_steps(self, problem: Problem, steps: list[str]) -> list[float]:
        """One score in [0, 1] per step, judging each step given the ones before it."""
        ...


def aggregate_steps(scores: list[float], how: StepAggregation) -> float:
    """Collapse per-step scores into one number; an empty list scores 0."""
    if not scores:
        return 0.0
    if how == "min":
        return min(scores)
    if how == "last":
        return scores[-1]
    if how == "mean":
        return sum(scores) / len(scores)
    product = 1.0
    for value in scores:
        product *= value
    return product


def passed(value: bool, detail: str = "") -> Score:
    """A binary rule verdict as a Score."""
    return Score(value=1.0 if value else 0.0, passed=value, detail=detail)
