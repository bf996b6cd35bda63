from fractions import Fraction

import pytest

from threadloom.verifiers.extract import (
    extract_answer,
    extract_answer_line,
    extract_boxed,
    extract_code,
    extract_last_number,
    normalize_number,
    parse_number,
)
from threadloom.verifiers.voting import answer_key


def test_boxed_takes_the_last_and_balances_braces() -> None:
    text = r"first \boxed{1} then \boxed{\frac{1}{2}} done"
    assert extract_boxed(text) == r"\frac{1}{2}"
    assert extract_boxed("no box here") is None
    assert extract_boxed(r"\boxed{unclosed") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so 3 + 4 = 7", "7"),
        ("It costs $1,234.50 in total.", "1234.5"),
        ("the change is -3 degrees", "-3"),
        ("half is 1/2", "1/2"),
        ("no digits", None),
        ("value .5", "0.5"),
    ],
)
def test_last_number(text: str, expected: str | None) -> None:
    assert extract_last_number(text) == expected


def test_answer_line_variants() -> None:
    assert extract_answer_line("work...\nAnswer: 42.") == "42"
    assert extract_answer_line("The answer is 7") == "7"
    assert extract_answer_line("blah\n#### 18") == "18"
    assert extract_answer_line("nothing") is None


def test_extract_by_format() -> None:
    text = "We add them. 17 + 25 = 42. Answer: 42"
    assert extract_answer(text, "number") == "42"
    assert extract_answer(r"so \boxed{42} (not 7)", "number") == "42"
    assert extract_answer(r"thus \boxed{x^2}", "boxed") == "x^2"
    assert extract_answer("I think 41 or maybe 42", "auto") == "42"
    assert extract_answer("  Paris  ", "text") == "Paris"
    assert extract_answer("steps\n(7 - 8/8) * 4 = 24", "expression") == "(7 - 8/8) * 4 = 24"
    assert extract_answer('here {"a": 1} ok', "json") == '{"a": 1}'


def test_code_block_extraction() -> None:
    text = "Here:\n```python\ndef f():\n    return 1\n```\nDone"
    assert extract_code(text) == "def f():\n    return 1\n"
    assert extract_answer(text, "code") == "def f():\n    return 1"
    assert extract_code("plain") == "plain"


def test_parse_number() -> None:
    assert parse_number("1,000") == 1000
    assert parse_number("3/4") == Fraction(3, 4)
    assert parse_number("abc") is None
    assert parse_number("1/0") is None


@pytest.mark.timeout(30)  # before the bound, this one computed 10**999999999 for hours
@pytest.mark.parametrize(
    "text", ["1e999999999", "-1e999999999", "1e-999999999", "5e1001", "7" * 1001, "1.5e99999"]
)
def test_numbers_past_the_bounds_are_not_numbers(text: str) -> None:
    assert parse_number(text) is None
    assert not (answer_key(text) or "").startswith("#")  # votes as text, not as a number


def test_numbers_within_the_bounds_are_exact() -> None:
    assert parse_number("1e1000") == 10**1000
    assert parse_number("2.5e-3") == Fraction(1, 400)
    assert parse_number("7" * 400) == int("7" * 400)
    assert parse_number("1_000") is None  # Python literal syntax, not how answers are written


def test_normalizing_numbers_beyond_floats_keeps_them_exact() -> None:
    huge = "1" * 400 + ".5"
    assert normalize_number(huge) == huge
    assert parse_number(normalize_number(huge) or "") == Fraction(int("1" * 400) * 2 + 1, 2)
    assert normalize_number("1e-400") == "1e-400"
    assert normalize_number("7" * 400) == "7" * 400
