"""The Verifier protocol and the process-verifier extension."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from threadloom.errors import ThreadloomError
from threadloom.types import Candidate, Problem, Score

logger = logging.getLogger(__name__)

StepAggregation = Literal["min", "prod", "last", "mean"]


@runtime_checkable
class Verifier(Protocol):
    """Scores a candidate solution of a problem. Rule verifiers are pure and fast.

    A verifier whose `score` never waits (a pure rule check) may say so with a class attribute
    `runs_inline = True`: a run then scores its candidates one after the other in the calling
    task instead of starting a task for each (see `runs_inline`).
    """

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


def runs_inline(verifier: object) -> bool:
    """True when the verifier says its `score` never waits (`runs_inline = True`)."""
    return getattr(verifier, "runs_inline", False) is True


def passed(value: bool, detail: str = "") -> Score:
    """A binary rule verdict as a Score."""
    return Score(value=1.0 if value else 0.0, passed=value, detail=detail)


def unjudged(detail: str) -> Score:
    """The score of an answer a verifier cannot judge without a reference: it ranks above
    having no answer at all, and says it is no verdict (`judged=False`)."""
    return Score(value=1.0, passed=None, judged=False, detail=detail)


V = TypeVar("V", bound=Verifier)
_TOTAL_MARK = "_threadloom_total"
_DETAIL_CHARS = 200


def make_total(verifier: V) -> V:
    """Make a verifier's `score` (and `score_steps`, if it has one) total.

    Anything a model writes reaches a verifier, so a crash there must not end the run: an
    untyped exception raised while scoring becomes a failed `Score` whose detail names it (and
    zero scores from `score_steps`). Typed `ThreadloomError`s (a malformed dataset rule, a dead
    PRM worker) still propagate: they are the caller's to handle, not the answer's fault.

    The verifier's own methods are replaced on the instance, so its type, attributes and
    `close()` stay as they were; a verifier that refuses new attributes is wrapped instead.

    Args:
        verifier: Any verifier; one already made total is returned as it is.

    Returns:
        The same verifier (or, rarely, a wrapper forwarding to it).
    """
    if getattr(verifier, _TOTAL_MARK, False):
        return verifier
    name = _name_of(verifier)
    methods: dict[str, Any] = {"score": _total_score(verifier.score, name), _TOTAL_MARK: True}
    score_steps = getattr(verifier, "score_steps", None)
    if callable(score_steps):
        methods["score_steps"] = _total_score_steps(score_steps, name)
    try:
        for attribute, value in methods.items():
            setattr(verifier, attribute, value)
    except (AttributeError, TypeError, ValueError):  # slots, frozen models, read-only
        return _TotalWrapper(verifier, methods)  # type: ignore[return-value]
    return verifier


def failed_score(name: str, exc: BaseException) -> Score:
    """A failed Score telling that the verifier raised `exc` on this candidate."""
    try:
        reason = f"{type(exc).__name__}: {exc}"
    except Exception:  # an exception whose message cannot even be formatted
        reason = type(exc).__name__
    detail = f"{name} could not score this answer ({reason})"
    return Score(value=0.0, passed=False, detail=detail[:_DETAIL_CHARS])


def _total_score(
    score: Callable[[Problem, Candidate], Awaitable[Score]], name: str
) -> Callable[[Problem, Candidate], Awaitable[Score]]:
    async def total_score(problem: Problem, candidate: Candidate) -> Score:
        try:
            result = await score(problem, candidate)
        except ThreadloomError:
            raise
        except Exception as exc:
            logger.warning("verifier %s raised %s while scoring; scored as failed", name,
                           type(exc).__name__, exc_info=logger.isEnabledFor(logging.DEBUG))
            return failed_score(name, exc)
        if not isinstance(result, Score):
            return failed_score(name, TypeError(f"score returned {type(result).__name__}"))
        return result

    return total_score


def _total_score_steps(
    score_steps: Callable[[Problem, list[str]], Awaitable[list[float]]], name: str
) -> Callable[[Problem, list[str]], Awaitable[list[float]]]:
    async def total_score_steps(problem: Problem, steps: list[str]) -> list[float]:
        try:
            return await score_steps(problem, steps)
        except ThreadloomError:
            raise
        except Exception as exc:
            logger.warning("verifier %s raised %s while scoring steps; each step scores 0",
                           name, type(exc).__name__, exc_info=logger.isEnabledFor(logging.DEBUG))
            return [0.0] * len(steps)

    return total_score_steps


def _name_of(verifier: object) -> str:
    name = getattr(verifier, "name", None)
    return name if isinstance(name, str) else type(verifier).__name__


class _TotalWrapper:
    """Forwards every attribute to a verifier that refused new ones, except the total methods."""

    def __init__(self, inner: object, methods: dict[str, Any]) -> None:
        self.__dict__.update(methods)
        self.__dict__["_inner"] = inner

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.__dict__["_inner"], attribute)
