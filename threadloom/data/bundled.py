"""Loaders for the four benchmark files shipped inside the package."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources

from threadloom.data.jsonl import Record, as_answer, iter_records, require, require_text
from threadloom.errors import ConfigError
from threadloom.types import Problem

GSM8K_FILE = "gsm8k_test_0-799.jsonl"
MATH500_FILE = "math500_0-299.jsonl"
HUMANEVAL_FILE = "humaneval_0-119.jsonl"
GAME24_FILE = "game24_0-999.jsonl"

HUMANEVAL_INSTRUCTION = (
    "Complete the Python function below. Reply with the whole function (its signature, its "
    "body and any imports it needs) in a single ```python code block."
)


def _rows(file_name: str, limit: int | None) -> Iterator[tuple[str, int, Record]]:
    """(file name, line number, row) for the first `limit` rows of a bundled file."""
    resource = resources.files("threadloom.data").joinpath(file_name)
    try:
        text = resource.read_text(encoding="utf-8")
    except (FileNotFoundError, OSError) as exc:
        raise ConfigError(
            f"bundled data file {file_name} is missing ({exc}); reinstall threadloom"
        ) from None
    for count, (line_no, record) in enumerate(iter_records(text, file_name)):
        if limit is not None and count >= limit:
            return
        yield file_name, line_no, record


def load_gsm8k(limit: int | None = None) -> list[Problem]:
    """Grade-school math word problems; the reference is the final number."""
    problems = []
    for source, line, row in _rows(GSM8K_FILE, limit):
        answer = as_answer(require(row, "answer", source, line))
        problems.append(
            Problem(
                prompt=require_text(row, "question", source, line),
                # a few answers are written with thousands separators ("1,450,000")
                reference=answer.replace(",", ""),
                answer_format="number",
                id=require_text(row, "id", source, line),
                metadata={
                    "verifier": "numeric",
                    "dataset": "gsm8k",
                    "solution": require_text(row, "solution", source, line),
                },
            )
        )
    return problems


def load_math500(limit: int | None = None) -> list[Problem]:
    """Competition math; the reference is the solution's boxed answer."""
    problems = []
    for source, line, row in _rows(MATH500_FILE, limit):
        problems.append(
            Problem(
                prompt=require_text(row, "problem", source, line),
                reference=require_text(row, "answer", source, line).strip(),
                answer_format="boxed",
                id=require_text(row, "id", source, line),
                metadata={
                    "verifier": "math",
                    "dataset": "math500",
                    "solution": require_text(row, "solution", source, line),
                    "level": require(row, "level", source, line),
                    "subject": require_text(row, "subject", source, line),
                },
            )
        )
    return problems


def humaneval_problem(row: Record, source: str, line: int, dataset: str) -> Problem:
    """One HumanEval task (task_id, prompt, test, entry_point, canonical_solution columns)."""
    code = require_text(row, "prompt", source, line)
    return Problem(
        prompt=f"{HUMANEVAL_INSTRUCTION}\n\n```python\n{code.rstrip()}\n```",
        reference=None,
        answer_format="code",
        id=require_text(row, "task_id", source, line),
        metadata={
            "verifier": "code",
            "dataset": dataset,
            "prompt_code": code,
            "test": require_text(row, "test", source, line),
            "entry_point": require_text(row, "entry_point", source, line),
            "canonical_solution": require_text(row, "canonical_solution", source, line),
        },
    )


def load_humaneval(limit: int | None = None) -> list[Problem]:
    """Python functions to complete from a signature and docstring, graded by unit tests."""
    return [
        humaneval_problem(row, source, line, "humaneval")
        for source, line, row in _rows(HUMANEVAL_FILE, limit)
    ]


def game24_prompt(numbers: list[int]) -> str:
    """The instruction for one Game of 24 puzzle."""
    shown = " ".join(str(n) for n in numbers)
    return (
        f"Use each of the numbers {shown} exactly once, with + - * / and parentheses, to make "
        "24. Write the expression on a final line starting with 'Answer:'."
    )


def load_game24(limit: int | None = None) -> list[Problem]:
    """Game of 24 puzzles; any expression that makes 24 is correct, so there is no reference."""
    problems = []
    for source, line, row in _rows(GAME24_FILE, limit):
        numbers = require(row, "numbers", source, line)
        if (
            not isinstance(numbers, list)
            or len(numbers) != 4
            or not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers)
        ):
            raise ConfigError(
                f"{source}, line {line}: field 'numbers' must be a list of 4 integers, "
                f"got {numbers!r}"
            )
        metadata: dict[str, object] = {
            "verifier": "game24",
            "dataset": "game24",
            "numbers": list(numbers),
        }
        if "human_solve_rate" in row:
            metadata["human_solve_rate"] = row["human_solve_rate"]
        problems.append(
            Problem(
                prompt=game24_prompt(numbers),
                reference=None,
                answer_format="expression",
                id=require_text(row, "id", source, line),
                metadata=metadata,
            )
        )
    return problems
