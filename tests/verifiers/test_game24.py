"""Game24Verifier: expressions are parsed, never run, and must use each number once."""

from __future__ import annotations

import pytest

from threadloom.types import Candidate, Problem
from threadloom.verifiers.base import Verifier
from threadloom.verifiers.game24 import (
    Game24Verifier,
    InvalidExpression,
    find_expression,
    parse_expression,
)
from threadloom.verifiers.registry import make_verifier

PROBLEM = Problem(prompt="Use 4 7 8 8 to make 24.", metadata={"numbers": [4, 7, 8, 8]})


async def score(text: str, problem: Problem = PROBLEM) -> tuple[bool | None, str]:
    result = await Game24Verifier().score(problem, Candidate(text=text))
    assert result.value == (1.0 if result.passed else 0.0)
    return result.passed, result.detail


def test_protocol_and_registry() -> None:
    verifier = make_verifier("game24")
    assert isinstance(verifier, Game24Verifier) and isinstance(verifier, Verifier)
    assert verifier.name == "game24"


@pytest.mark.parametrize(
    "text",
    [
        "(7 - 8/8) * 4",
        "Answer: (7 - 8/8) * 4 = 24",
        "Let me think.\n7 - 8/8 = 6, and 6 * 4 = 24.\nSo: (7 - 8/8) * 4 = 24",
        "**Answer:** `(7 - 8 / 8) × 4`",
        "The answer is (7 − 8 ÷ 8) x 4 = 24.",
        "So $\\boxed{(7 - 8 \\div 8) \\times 4}$",
        "4*(7-8/8)",
        "24 = 4 * (7 - 8 / 8)",
        "Answer: so we get (7 - 8/8) * 4 which is 24",
    ],
)
async def test_known_solution_passes(text: str) -> None:
    ok, detail = await score(text)
    assert ok is True, detail


async def test_wrong_value_fails() -> None:
    ok, detail = await score("Answer: (7 + 8/8) * 4")
    assert ok is False and "32" in detail and "not 24" in detail


async def test_reusing_a_number_fails() -> None:
    ok, detail = await score("Answer: (8 - 8/8) * 4 - 4")
    assert ok is False and "uses" in detail


async def test_missing_number_fails() -> None:
    ok, detail = await score("Answer: 8 * 4 - 8 = 24")
    assert ok is False and "uses [4, 8, 8]" in detail


async def test_code_injection_fails_safely() -> None:
    ok, detail = await score("Answer: __import__('os').system('echo pwned')")
    assert ok is False and "not allowed" in detail
    ok, detail = await score("__import__('os')")
    assert ok is False


async def test_division_by_zero_fails() -> None:
    problem = Problem(prompt="q", metadata={"numbers": [4, 7, 8, 8]})
    ok, detail = await score("Answer: 4 / (8 - 8) + 7", problem)
    assert ok is False and "divides by zero" in detail


async def test_power_is_not_allowed() -> None:
    problem = Problem(prompt="q", metadata={"numbers": [1, 2, 10]})
    ok, detail = await score("Answer: 1 + 2 ** 10", problem)
    assert ok is False and "Pow" in detail


@pytest.mark.parametrize(
    "text",
    ["x + 1", "abs(-24)", "(1).real", "8.0 * 3", "True + 23", "[24][0]", "24 if 1 else 0", "~24"],
)
def test_only_integer_arithmetic_parses(text: str) -> None:
    with pytest.raises(InvalidExpression):
        parse_expression(text)


def test_parse_rejects_huge_input() -> None:
    with pytest.raises(InvalidExpression):
        parse_expression("(" * 500 + "1" + ")" * 500)


async def test_exact_fractions() -> None:
    problem = Problem(prompt="q", metadata={"numbers": [3, 3, 8, 8]})
    ok, detail = await score("Answer: 8 / (3 - 8 / 3)", problem)
    assert ok is True, detail


async def test_negation_and_other_targets() -> None:
    problem = Problem(prompt="q", metadata={"numbers": [1, 2, 3], "target": 5})
    ok, _ = await score("Answer: 2 * 3 - 1", problem)
    assert ok is True
    ok, _ = await score("Answer: -1 + 2 * 3", problem)
    assert ok is True


async def test_problem_without_numbers_and_answer_without_expression() -> None:
    ok, detail = await score("(7 - 8/8) * 4", Problem(prompt="q"))
    assert ok is False and "numbers" in detail
    ok, detail = await score("I do not know.")
    assert ok is False and "no arithmetic expression" in detail


def test_find_expression_strips_the_result() -> None:
    assert find_expression("Answer: (7 - 8/8) * 4 = 24.") == "(7 - 8/8) * 4"
    assert find_expression("3 x 8") == "3 * 8"
