"""Final-answer extraction from model output: the one place that knows answer formats."""

from __future__ import annotations

import math
import re
from fractions import Fraction

from threadloom.types import AnswerFormat

_NUMBER = re.compile(r"(?<![\w.])-?\$?\s?\d[\d,]*(?:\.\d+)?(?:/\d+)?|(?<![\w.])-?\.\d+")
_ANSWER_LINE = re.compile(
    r"(?:final answer|the answer is|answer\s*[:=]|####)\s*[:=]?\s*(.+)", re.IGNORECASE
)
_SHORT_ANSWER_CHARS = 80
"""'auto' reads the last number only from replies this short; longer text is the answer."""
_CODE_BLOCK = re.compile(r"```(?:[a-zA-Z0-9_+-]*)\n(.*?)(?:```|\Z)", re.DOTALL)

MAX_NUMBER_CHARS = 1000
"""Longest text read as a number; a longer digit run is not an answer anybody can check."""
MAX_EXPONENT = 1000
"""Largest |exponent| read in '1e5' notation: `Fraction('1e999999999')` would compute for hours."""
_NUMBER_LITERAL = re.compile(
    r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE](?P<exponent>[-+]?\d+))?|[-+]?\d+/\d+"
)


def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for i in range(brace, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[brace + 1 : i].strip()
    return None


def extract_answer_line(text: str) -> str | None:
    """What follows the last 'answer:' / 'the answer is' / '####' marker, on that line."""
    matches = list(_ANSWER_LINE.finditer(text))
    if not matches:
        return None
    value = matches[-1].group(1).strip().rstrip(".").strip()
    return value or None


def extract_last_number(text: str) -> str | None:
    """The last number in the text, normalized ('1,234.50' -> '1234.5', '$5' -> '5')."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    return normalize_number(found[-1])


def normalize_number(raw: str) -> str | None:
    """A canonical spelling of a number: '1,234.50' -> '1234.5', '6/8' -> '3/4'."""
    cleaned = raw.replace(",", "").replace("$", "").replace(" ", "")
    value = parse_number(cleaned)
    if value is None:
        return None
    if value.denominator == 1:
        return str(value.numerator)
    if "/" in cleaned:
        return f"{value.numerator}/{value.denominator}"
    try:
        as_float = float(value)
    except OverflowError:
        return cleaned
    if as_float == 0.0 or math.isinf(as_float):
        return cleaned  # too small or too large for a float: keep it as written, exact
    return repr(as_float)


def parse_number(text: str) -> Fraction | None:
    """An exact number from '42', '-3.5', '3/4', '1,000', '2e3'; None if it is not one.

    Bounded for hostile input: text longer than `MAX_NUMBER_CHARS` or an exponent beyond
    `MAX_EXPONENT` is not a number, so no answer can make the conversion compute for long.
    """
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".")
    if not cleaned or len(cleaned) > MAX_NUMBER_CHARS:
        return None
    literal = _NUMBER_LITERAL.fullmatch(cleaned)
    if literal is None:
        return None
    exponent = literal.group("exponent")
    if exponent is not None and abs(int(exponent)) > MAX_EXPONENT:
        return None
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def extract_code(text: str) -> str:
    """The last fenced code block, or the whole text when there is none."""
    blocks = _CODE_BLOCK.findall(text)
    return blocks[-1] if blocks else text


def extract_answer(text: str, answer_format: AnswerFormat = "text") -> str | None:
    """The final answer written in `text`, read according to the problem's answer format."""
    if answer_format == "code":
        code = extract_code(text).strip()
        return code or None
    if answer_format == "boxed":
        return extract_boxed(text) or extract_answer_line(text) or extract_last_number(text)
    if answer_format == "number":
        for source in (extract_boxed(text), extract_answer_line(text)):
            if source:
                number = extract_last_number(source)
                if number is not None:
                    return number
        return extract_last_number(text)
    if answer_format == "json":
        start, end = text.find("{"), text.rfind("}")
        return text[start : end + 1] if 0 <= start < end else None
    stripped = text.strip()
    if answer_format == "text":
        return stripped or None
    if answer_format == "expression":
        return extract_answer_line(text) or _last_line_with_digits(text)
    found = extract_boxed(text) or extract_answer_line(text)
    if found:
        return found
    if len(stripped) <= _SHORT_ANSWER_CHARS:
        # a short reply such as '17 + 25 = 42.' answers with its last number
        return extract_last_number(stripped) or stripped or None
    return stripped


def _last_line_with_digits(text: str) -> str | None:
    for line in reversed(text.strip().splitlines()):
        if any(ch.isdigit() for ch in line):
            return line.strip()
    return None
