"""Seeded one- and two-step arithmetic word problems with whole-number answers.

Problem i of a seed is drawn from its own random stream, so the first N problems are the same
whatever `size` is, and a run can be reproduced from (seed, difficulty) alone.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from threadloom.data.jsonl import check_limit
from threadloom.data.options import parse_options
from threadloom.types import Problem

NAMES = ("Tom", "Mia", "Sam", "Lena", "Ravi", "Ana", "Ben", "Zoe", "Omar", "Kim", "Leo", "Ivy")
OBJECTS = (
    "apples",
    "pencils",
    "marbles",
    "stickers",
    "cookies",
    "books",
    "shells",
    "cards",
    "stamps",
    "balloons",
)
CONTAINERS = ("bags", "boxes", "packs", "baskets", "jars")
COLORS = (("red", "blue"), ("green", "yellow"), ("big", "small"))

INSTRUCTION = "Give the final answer as a number."


class ArithmeticOptions(BaseModel):
    """Options of the `arithmetic` dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    difficulty: int = Field(1, ge=1, le=3)
    """1: one step, numbers up to 20; 2: one or two steps, up to 50; 3: two steps, up to 100."""
    size: int = Field(200, ge=1)
    """How many problems to generate."""


@dataclass(frozen=True)
class _Level:
    max_number: int
    """Largest number added or subtracted."""
    max_factor: int
    """Largest factor in a multiplication."""
    two_step_share: float
    """Probability that a problem takes two steps."""


LEVELS = {
    1: _Level(max_number=20, max_factor=5, two_step_share=0.0),
    2: _Level(max_number=50, max_factor=10, two_step_share=0.5),
    3: _Level(max_number=100, max_factor=12, two_step_share=1.0),
}


@dataclass(frozen=True)
class _Item:
    question: str
    expression: str
    """The computation as a plain arithmetic expression over the numbers in the question."""
    answer: int
    steps: int


@dataclass(frozen=True)
class _Cast:
    """The people and things one problem talks about."""

    name: str
    friend: str
    obj: str
    container: str
    colors: tuple[str, str]


Template = Callable[[random.Random, _Level, _Cast], _Item]


def _add(rng: random.Random, lv: _Level, c: _Cast) -> _Item:
    a, b = rng.randint(2, lv.max_number), rng.randint(2, lv.max_number)
    question = rng.choice(
        (
            f"{c.name} has {a} {c.obj} and buys {b} more. How many {c.obj} does {c.name} have now?",
            f"There are {a} {c.obj} on a table. {c.name} puts {b} more {c.obj} on the table. "
            f"How many {c.obj} are on the table now?",
        )
    )
    return _Item(question, f"{a} + {b}", a + b, 1)


def _subtract(rng: random.Random, lv: _Level, c: _Cast) -> _Item:
    a = rng.randint(3, lv.max_number)
    b = rng.randint(2, a - 1)
    question = rng.choice(
        (
            f"{c.name} has {a} {c.obj} and gives {b} of them to {c.friend}. "
            f"How many {c.obj} does {c.name} have left?",
            f"{c.name} had {a} {c.obj} and lost {b} of them. "
            f"How many {c.obj} does {c.name} have now?",
        )
    )
    return _Item(question, f"{a} - {b}", a - b, 1)


def _multiply(rng: random.Random, lv: _Level, c: _Cast) -> _Item:
    a, b = rng.randint(2, lv.max_factor), rng.randint(2, min(10, lv.max_number))
    question = (
        f"{c.name} has {a} {c.container} with {b} {c.obj} in each. "
        f"How many {c.obj} does {c.name} have in total?"
    )
    return _Item(question, f"{a} * {b}", a * b, 1)


def _add_then_subtract(rng: random.Random, lv: _Level, c: _Cast) -> _Item:
    a, b = rng.randint(2, lv.max_number), rng.randint(2, lv.max_number)
    d = rng.randint(2, min(lv.max_number, a + b - 1))
    question = (
        f"{c.name} has {a} {c.obj}, buys {b} more, and then gives {d} to {c.friend}. "
        f"How many {c.obj} does {c.name} have now?"
    )
    return _Item(question, f"{a} + {b} - {d}", a + b - d, 2)


def _subtract_then_add(rng: random.Random, lv: _Level, c: _Cast) -> _Item:
    a = rng.randint(3, lv.max_number)
    b = rng.randint(2, a - 1)
    d = rng.randint(2, lv.max_number)
    question = (
        f"{c.name} has {a} {c.obj}. {c.name} gives {b} of them to {c.friend} and then finds "
        f"{d} more. How many {c.obj} does {c.name} have now?"
    )
    return _Item(question, f"{a} - {b} + {d}", a - b + d, 2)


def _multiply_then_add(rng: random.Random, lv: _Level, c: _Cast) -> _Item:
    a, b = rng.randint(2, lv.max_factor), rng.randint(2, lv.max_factor)
    d = rng.randint(2, lv.max_number)
    question = (
        f"{c.name} has {d} {c.obj}. Then {c.name} buys {a} {c.container} with {b} {c.obj} "
        f"in each. How many {c.obj} does {c.name} have now?"
    )
    return _Item(question, f"{d} + {a} * {b}", d + a * b, 2)


def _multiply_then_subtract(rng: random.Random, lv: _Level, c: _Cast) -> _Item:
    a, b = rng.randint(2, lv.max_factor), rng.randint(2, lv.max_factor)
    d = rng.randint(2, min(lv.max_number, a * b - 1))
    question = (
        f"{c.name} buys {a} {c.container} with {b} {c.obj} in each and gives {d} {c.obj} "
        f"to {c.friend}. How many {c.obj} does {c.name} have left?"
    )
    return _Item(question, f"{a} * {b} - {d}", a * b - d, 2)


def _add_then_multiply(rng: random.Random, lv: _Level, c: _Cast) -> _Item:
    a = rng.randint(2, lv.max_factor)
    b, d = rng.randint(2, lv.max_factor), rng.randint(2, lv.max_factor)
    first, second = c.colors
    question = (
        f"{c.name} has {a} {c.container}. Each one holds {b} {first} {c.obj} and {d} "
        f"{second} {c.obj}. How many {c.obj} does {c.name} have in total?"
    )
    return _Item(question, f"{a} * ({b} + {d})", a * (b + d), 2)


ONE_STEP: tuple[Template, ...] = (_add, _subtract, _multiply)
TWO_STEP: tuple[Template, ...] = (
    _add_then_subtract,
    _subtract_then_add,
    _multiply_then_add,
    _multiply_then_subtract,
    _add_then_multiply,
)


def _problem(seed: int, difficulty: int, index: int) -> Problem:
    rng = random.Random(f"arithmetic/{seed}/{difficulty}/{index}")
    level = LEVELS[difficulty]
    name, friend = rng.sample(NAMES, 2)
    cast = _Cast(
        name=name,
        friend=friend,
        obj=rng.choice(OBJECTS),
        container=rng.choice(CONTAINERS),
        colors=rng.choice(COLORS),
    )
    templates = TWO_STEP if rng.random() < level.two_step_share else ONE_STEP
    item = rng.choice(templates)(rng, level, cast)
    return Problem(
        prompt=f"{item.question} {INSTRUCTION}",
        reference=str(item.answer),
        answer_format="number",
        id=f"arith-{seed}-{index}",
        metadata={
            "verifier": "numeric",
            "dataset": "arithmetic",
            "expression": item.expression,
            "steps": item.steps,
            "difficulty": difficulty,
        },
    )


def generate_arithmetic(
    *, seed: int = 0, limit: int | None = None, **options: Any
) -> list[Problem]:
    """Generate arithmetic word problems.

    Args:
        seed: Picks the problems; the same seed gives the same problems.
        limit: Keep only the first N problems.
        **options: `difficulty` (1-3, default 1) and `size` (default 200); see
            `ArithmeticOptions`.

    Returns:
        Problems whose reference is a non-negative whole number, with the computation in
        metadata["expression"].

    Raises:
        ConfigError: An option is unknown or out of range.
    """
    check_limit(limit)
    opts = parse_options(ArithmeticOptions, "arithmetic", options)
    count = opts.size if limit is None else min(opts.size, limit)
    return [_problem(seed, opts.difficulty, i) for i in range(count)]
