"""game24: an arithmetic expression that uses each given number once and makes 24.

The expression is parsed with `ast` and evaluated exactly with fractions; only integer
literals, + - * /, unary minus and parentheses are accepted, so nothing in it is ever run.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from fractions import Fraction

from threadloom.types import Candidate, Problem, Score
from threadloom.verifiers.base import passed
from threadloom.verifiers.extract import extract_answer_line, extract_boxed

__all__ = ["Game24Verifier", "parse_expression"]

_MAX_EXPRESSION_CHARS = 200
_OPERATOR = re.compile(r"[+\-*/×÷]")
_SYMBOLS = {
    "×": "*",
    "·": "*",
    "∗": "*",
    "\\times": "*",
    "\\cdot": "*",
    "÷": "/",
    "∕": "/",
    "\\div": "/",
    "−": "-",
    "–": "-",
    "\\left": "",
    "\\right": "",
    "[": "(",
    "]": ")",
}
# "x" as multiplication, between an operand and the next one: "3 x 8", "(1+2)x8"
_TIMES_X = re.compile(r"(?<=[\d)])(\s*)[xX](\s*)(?=[\d(])")
_ARITHMETIC_RUN = re.compile(r"[\d\s+\-*/()]+")
_BINARY = (ast.Add, ast.Sub, ast.Mult, ast.Div)


class InvalidExpression(ValueError):
    """The text is not an allowed arithmetic expression."""


class Game24Verifier:
    """Checks a Game-of-24 answer against the problem's numbers.

    `problem.metadata["numbers"]` lists the numbers (usually four); the answer must use each
    exactly once with + - * / and parentheses, and equal the target. The expression is read
    from an 'Answer:' line, else a boxed answer, else the last line holding digits and an
    operator; a trailing "= 24" is ignored.

    Args:
        target: The value to reach (a problem's metadata["target"] overrides it).
        name: The verifier's name in `Candidate.scores`.
    """

    def __init__(self, *, target: int = 24, name: str = "game24") -> None:
        self.target = target
        self.name = name

    async def score(self, problem: Problem, candidate: Candidate) -> Score:
        numbers = _int_list(problem.metadata.get("numbers"))
        if numbers is None:
            return passed(False, "the problem has no 'numbers' list of integers in its metadata")
        target = problem.metadata.get("target", self.target)
        if not isinstance(target, int) or isinstance(target, bool):
            return passed(False, f"the problem's target {target!r} is not an integer")
        text = find_expression(candidate.text, target)
        if text is None:
            return passed(False, "no arithmetic expression found in the answer")
        try:
            tree = parse_expression(text)
        except InvalidExpression as exc:
            return passed(False, f"{text!r}: {exc}")
        used = sorted(_literals(tree))
        if Counter(used) != Counter(numbers):
            return passed(False, f"{text!r} uses {used}, but the numbers are {sorted(numbers)}")
        try:
            value = _evaluate(tree)
        except ZeroDivisionError:
            return passed(False, f"{text!r} divides by zero")
        if value != target:
            return passed(False, f"{text!r} = {value}, not {target}")
        return passed(True, f"{text} = {target}")


def find_expression(text: str, target: int = 24) -> str | None:
    """The candidate's expression, normalized to Python operators, without a trailing '= 24'."""
    line = extract_answer_line(text) or extract_boxed(text) or _last_arithmetic_line(text)
    if line is None:
        return None
    if "\\boxed" in line or "\\fbox" in line:
        line = extract_boxed(line) or line
    for symbol, replacement in _SYMBOLS.items():
        line = line.replace(symbol, replacement)
    line = _TIMES_X.sub(r"\1*\2", line)
    sides = [side.strip().strip("`$* ").rstrip(".").strip() for side in line.split("=")]
    sides = [side for side in sides if side and side != str(target)]
    if len(sides) != 1:
        return None
    return sides[0]


def parse_expression(text: str) -> ast.Expression:
    """Parse `text`, allowing only integers, + - * /, unary minus and parentheses.

    Text around the expression (a prose prefix, say) is dropped when the whole does not parse.

    Raises:
        InvalidExpression: With the reason it is not allowed.
    """
    if len(text) > _MAX_EXPRESSION_CHARS:
        raise InvalidExpression(f"longer than {_MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        runs = [run.strip() for run in _ARITHMETIC_RUN.findall(text)]
        runs = [run for run in runs if any(c.isdigit() for c in run) and run != text.strip()]
        if not runs:
            raise InvalidExpression("not an arithmetic expression") from None
        try:
            tree = ast.parse(max(runs, key=len), mode="eval")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            raise InvalidExpression("not an arithmetic expression") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise InvalidExpression(f"cannot be parsed ({type(exc).__name__})") from None
    for node in ast.walk(tree):
        _check_node(node)
    return tree


def _check_node(node: ast.AST) -> None:
    if isinstance(node, ast.Expression | ast.operator | ast.unaryop):
        if isinstance(node, ast.operator) and not isinstance(node, _BINARY):
            raise InvalidExpression(f"the operator {type(node).__name__} is not allowed")
        if isinstance(node, ast.unaryop) and not isinstance(node, ast.USub):
            raise InvalidExpression(f"the operator {type(node).__name__} is not allowed")
        return
    if isinstance(node, ast.BinOp | ast.UnaryOp):
        return
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return
    if isinstance(node, ast.Constant):
        raise InvalidExpression(f"{node.value!r} is not an integer")
    raise InvalidExpression(f"{type(node).__name__} is not allowed (only + - * / on integers)")


def _literals(tree: ast.Expression) -> list[int]:
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, int)
    ]


def _evaluate(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp):
        return -_evaluate(node.operand)
    assert isinstance(node, ast.BinOp)
    left, right = _evaluate(node.left), _evaluate(node.right)
    if isinstance(node.op, ast.Add):
        return left + right
    if isinstance(node.op, ast.Sub):
        return left - right
    if isinstance(node.op, ast.Mult):
        return left * right
    return left / right


def _last_arithmetic_line(text: str) -> str | None:
    for line in reversed(text.strip().splitlines()):
        if any(c.isdigit() for c in line) and (_OPERATOR.search(line) or _TIMES_X.search(line)):
            return line.strip()
    return None


def _int_list(value: object) -> list[int] | None:
    if not isinstance(value, list | tuple) or not value:
        return None
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in value):
        return None
    return list(value)
