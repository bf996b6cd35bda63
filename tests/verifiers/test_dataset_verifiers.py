"""Every bundled dataset's reference solutions pass its declared verifier (and wrong ones fail)."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest

from threadloom import Candidate, data
from threadloom.evaluation.bench import Verifiers
from threadloom.verifiers.extract import extract_answer


def _graded(problem, text: str) -> Candidate:  # type: ignore[no-untyped-def]
    return Candidate(text=text, answer=extract_answer(text, problem.answer_format))


@pytest.fixture(scope="module")
def verifiers():  # type: ignore[no-untyped-def]
    found = Verifiers(selection="auto")
    yield found
    found.close()


async def test_gsm8k_answers_verify(verifiers) -> None:  # type: ignore[no-untyped-def]
    for problem in data.load("gsm8k", limit=40):
        grader = verifiers.grader(problem)
        good = await grader.score(problem, _graded(problem, f"So we get #### {problem.reference}"))
        assert good.passed, (problem.id, good.detail)
        bad = await grader.score(problem, _graded(problem, "#### 123456789"))
        assert not bad.passed


async def test_math500_boxed_answers_verify(verifiers) -> None:  # type: ignore[no-untyped-def]
    for problem in data.load("math500", limit=25):
        grader = verifiers.grader(problem)
        text = f"Therefore the answer is $\\boxed{{{problem.reference}}}$."
        score = await grader.score(problem, _graded(problem, text))
        assert score.passed, (problem.id, problem.reference, score.detail)


async def test_humaneval_canonical_solutions_pass(verifiers) -> None:  # type: ignore[no-untyped-def]
    for problem in data.load("humaneval", limit=8):
        grader = verifiers.grader(problem)
        solution = problem.metadata["prompt_code"] + problem.metadata["canonical_solution"]
        good = await grader.score(problem, _graded(problem, f"```python\n{solution}\n```"))
        assert good.passed, (problem.id, good.detail)
        wrong = problem.metadata["prompt_code"] + "    return None\n"
        bad = await grader.score(problem, _graded(problem, f"```python\n{wrong}\n```"))
        assert not bad.passed


def _solve24(numbers: list[int]) -> str | None:
    """A tiny brute-force solver, only to produce known-good answers for the test."""

    def search(items: list[tuple[Fraction, str]]) -> str | None:
        if len(items) == 1:
            return items[0][1] if items[0][0] == 24 else None
        for (i, a), (j, b) in itertools.permutations(enumerate(items), 2):
            rest = [x for k, x in enumerate(items) if k not in (i, j)]
            options = [
                (a[0] + b[0], f"({a[1]} + {b[1]})"),
                (a[0] - b[0], f"({a[1]} - {b[1]})"),
                (a[0] * b[0], f"({a[1]} * {b[1]})"),
            ]
            if b[0] != 0:
                options.append((a[0] / b[0], f"({a[1]} / {b[1]})"))
            for value in options:
                found = search([*rest, value])
                if found:
                    return found
        return None

    return search([(Fraction(n), str(n)) for n in numbers])


async def test_game24_known_solutions_check(verifiers) -> None:  # type: ignore[no-untyped-def]
    checked = 0
    for problem in data.load("game24", limit=12):
        expression = _solve24(problem.metadata["numbers"])
        if expression is None:
            continue
        grader = verifiers.grader(problem)
        score = await grader.score(problem, _graded(problem, f"Answer: {expression}"))
        assert score.passed, (problem.id, expression, score.detail)
        checked += 1
    assert checked >= 8


async def test_instruction_rules_grade_a_compliant_and_a_violating_answer(verifiers) -> None:  # type: ignore[no-untyped-def]
    problems = [
        p
        for p in data.load("instructions", limit=60)
        if [r["kind"] for r in p.metadata["rules"]] == ["contains_word"]
    ]
    assert problems
    for problem in problems[:5]:
        word = problem.metadata["rules"][0]["word"]
        grader = verifiers.grader(problem)
        assert (await grader.score(problem, _graded(problem, f"A short note on {word}."))).passed
        assert not (await grader.score(problem, _graded(problem, "Nothing relevant."))).passed


async def test_arithmetic_references_are_exact(verifiers) -> None:  # type: ignore[no-untyped-def]
    for problem in data.load("arithmetic", limit=30, seed=3, difficulty=2):
        grader = verifiers.grader(problem)
        text = f"Step by step... The answer is {problem.reference}."
        assert (await grader.score(problem, _graded(problem, text))).passed
