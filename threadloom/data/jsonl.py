"""Reading JSONL rows with errors that point at the file, line and field at fault."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from threadloom.errors import ConfigError

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
