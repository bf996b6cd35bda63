"""Reading JSONL rows with errors that point at the file, line and field at fault."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

from threadloom.errors import ConfigError
from threadloom.types import AnswerFormat, Problem

Record = dict[str, Any]


def iter_records(text: str, source: str) -> Iterator[tuple[int, Record]]:
    """Yield (line number, object) for each non-blank line of JSONL text.

    Args:
        text: The whole file's contents.
        source: The file's name, used in error messages.

    Raises:
        ConfigError: A line is not valid JSON or is not a JSON object.
    """
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{source}, line {line_no}: not valid JSON ({exc.msg} at column {exc.colno}); "
                "each line must hold one JSON object"
            ) from None
        if not isinstance(record, dict):
            raise ConfigError(
                f"{source}, line {line_no}: expected a JSON object, got {type(record).__name__}"
            )
        yield line_no, record


def require(record: Record, field: str, source: str, line_no: int) -> Any:
    """The value of `field` in a row, or a ConfigError naming the file, line and field."""
    if field not in record or record[field] is None:
        present = ", ".join(sorted(record)) or "none"
        raise ConfigError(
            f"{source}, line {line_no}: missing field {field!r} (fields present: {present})"
        )
    return record[field]


def require_text(record: Record, field: str, source: str, line_no: int) -> str:
    """Like `require`, for a field that must be a non-empty string."""
    value = require(record, field, source, line_no)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"{source}, line {line_no}: field {field!r} must be a non-empty string, "
            f"got {value!r:.60}"
        )
    return value


def as_answer(value: Any) -> str:
    """A reference answer as text: scalars as written, anything else as compact JSON."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def check_limit(limit: int | None) -> None:
    """Reject a negative `limit`."""
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be a non-negative number of problems, got {limit}")


def load_jsonl(
    path: str | os.PathLike[str],
    *,
    field: str = "question",
    answer_field: str | None = "answer",
    id_field: str | None = None,
    answer_format: AnswerFormat = "text",
    verifier: str | None = None,
    limit: int | None = None,
) -> list[Problem]:
    """Load problems from your own JSONL file, one JSON object per line.

    Fields other than the prompt, answer and id travel along in each problem's metadata.

    Args:
        path: The JSONL file.
        field: The field holding the question text.
        answer_field: The field holding the reference answer; None if the file has none.
        id_field: The field holding a row id; None numbers the rows as `<file stem>/<index>`.
        answer_format: How answers are written (e.g. "number", "boxed", "code", "text").
        verifier: The name of the verifier that grades these problems (e.g. "numeric",
            "math"), stored as metadata["verifier"].
        limit: Read only the first N problems.

    Returns:
        The problems, in file order.

    Raises:
        ConfigError: The file is missing or unreadable, a line is not a JSON object, or a row
            lacks a named field; the message names the file, line and field.
    """
    check_limit(limit)
    if answer_format not in get_args(AnswerFormat):
        valid = ", ".join(get_args(AnswerFormat))
        raise ConfigError(f"unknown answer_format {answer_format!r}; valid formats: {valid}")
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such file; pass the path of a JSONL file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read it as UTF-8 text ({exc})") from None

    source = str(file)
    own_fields = {field, answer_field, id_field}
    problems: list[Problem] = []
    for line_no, record in iter_records(text, source):
        if limit is not None and len(problems) >= limit:
            break
        prompt = require_text(record, field, source, line_no)
        reference = (
            None
            if answer_field is None
            else as_answer(require(record, answer_field, source, line_no))
        )
        if id_field is None:
            problem_id = f"{file.stem}/{len(problems)}"
        else:
            problem_id = as_answer(require(record, id_field, source, line_no))
        metadata = {k: v for k, v in record.items() if k not in own_fields}
        metadata["dataset"] = file.stem
        if verifier is not None:
            metadata["verifier"] = verifier
        problems.append(
            Problem(
                prompt=prompt,
                reference=reference,
                answer_format=answer_format,
                id=problem_id,
                metadata=metadata,
            )
        )
    return problems
