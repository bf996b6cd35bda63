"""Turning table rows (JSONL lines, Arrow/Parquet records) into problems by a field mapping."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict

from threadloom.data.jsonl import as_answer, require, require_text
from threadloom.errors import ConfigError
from threadloom.types import AnswerFormat, Problem

logger = logging.getLogger(__name__)


class FieldMapping(BaseModel):
    """Which columns of a row hold the question, the answer and the row id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = "question"
    """The column holding the question text."""
    answer_field: str | None = "answer"
    """The column holding the reference answer; None when the rows have none."""
    id_field: str | None = None
    """The column holding a row id; None numbers the rows `<dataset>/<index>`."""
    answer_format: AnswerFormat = "text"
    """How answers are written (number, boxed, code, text, ...)."""
    verifier: str | None = None
    """The verifier that grades the rows, stored as metadata["verifier"]."""


def check_answer_format(answer_format: str) -> None:
    """Reject an answer format the verifiers do not know."""
    if answer_format not in get_args(AnswerFormat):
        valid = ", ".join(get_args(AnswerFormat))
        raise ConfigError(f"unknown answer_format {answer_format!r}; valid formats: {valid}")


def jsonable(value: Any) -> bool:
    """Whether a value can travel in a problem's metadata (and so in JSON results)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def row_problem(
    record: Mapping[str, Any],
    mapping: FieldMapping,
    *,
    dataset: str,
    source: str,
    where: int,
    index: int,
) -> Problem:
    """One problem from one row; the other JSON-able columns travel in its metadata.

    Args:
        record: The row.
        mapping: Which columns to read.
        dataset: The dataset's short name, for ids and metadata["dataset"].
        source: The file or Hub name, for error messages.
        where: The row's line (a JSONL file) or row number, for error messages.
        index: The problem's position among those loaded, for generated ids.

    Raises:
        ConfigError: A mapped column is missing or empty; the message names the source, row
            and column, and lists the columns present.
    """
    row = dict(record)
    prompt = require_text(row, mapping.field, source, where)
    reference = (
        None
        if mapping.answer_field is None
        else as_answer(require(row, mapping.answer_field, source, where))
    )
    if mapping.id_field is None:
        problem_id = f"{dataset}/{index}"
    else:
        problem_id = as_answer(require(row, mapping.id_field, source, where))
    own = {mapping.field, mapping.answer_field, mapping.id_field}
    metadata = {k: v for k, v in row.items() if k not in own and jsonable(v)}
    metadata["dataset"] = dataset
    if mapping.verifier is not None:
        metadata["verifier"] = mapping.verifier
    return Problem(
        prompt=prompt,
        reference=reference,
        answer_format=mapping.answer_format,
        id=problem_id,
        metadata=metadata,
    )


def rows_problems(
    rows: Iterable[tuple[int, Mapping[str, Any]]],
    mapping: FieldMapping,
    *,
    dataset: str,
    source: str,
    limit: int | None = None,
) -> list[Problem]:
    """Problems from (line or row number, row) pairs, mapped field by field, in order."""
    check_answer_format(mapping.answer_format)
    problems: list[Problem] = []
    for where, row in rows:
        if limit is not None and len(problems) >= limit:
            break
        problems.append(
            row_problem(
                row, mapping, dataset=dataset, source=source, where=where, index=len(problems)
            )
        )
    return problems
