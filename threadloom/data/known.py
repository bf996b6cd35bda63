"""Hub datasets threadloom knows: their columns, their reference answers and their graders.

A known dataset loaded with `hf:NAME` needs no field mapping: GSM8K's reference is the number
after its solution's `####`, MATH-500 and AIME are graded by the `math` verifier on a boxed
answer, HumanEval by the `code` verifier running its unit tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from threadloom.data.bundled import humaneval_problem
from threadloom.data.jsonl import as_answer, require, require_text
from threadloom.errors import ConfigError
from threadloom.types import AnswerFormat, Problem

RowBuilder = Callable[[Mapping[str, Any], str, int, str], Problem]
"""build(row, source, row number, dataset name) -> the row's problem."""


@dataclass(frozen=True)
class KnownDataset:
    """How to read one family of Hub datasets."""

    hub_ids: tuple[str, ...]
    """Hub names (lower case) that hold this family's columns."""
    verifier: str
    answer_format: AnswerFormat
    build: RowBuilder
    default_config: str | None = None
    """The config to load when the spec names none (GSM8K has no default of its own)."""


def _column(row: Mapping[str, Any], names: tuple[str, ...], source: str, where: int) -> Any:
    """The first of `names` present in the row, matched without regard to case."""
    by_lower = {key.lower(): key for key in row}
    for name in names:
        key = by_lower.get(name)
        if key is not None and row[key] is not None:
            return row[key]
    present = ", ".join(sorted(row)) or "none"
    raise ConfigError(
        f"{source}, row {where}: none of the columns {', '.join(names)} "
        f"(columns present: {present})"
    )


def _gsm8k(row: Mapping[str, Any], source: str, where: int, dataset: str) -> Problem:
    record = dict(row)
    solution = require_text(record, "answer", source, where)
    worked, marker, final = solution.rpartition("####")
    reference = final.strip().replace(",", "")
    if not marker or not reference:
        raise ConfigError(
            f"{source}, row {where}: the answer has no '#### <number>' line; is this GSM8K?"
        )
    return Problem(
        prompt=require_text(record, "question", source, where),
        reference=reference,
        answer_format="number",
        id=f"{dataset}/{where - 1}",
        metadata={"verifier": "numeric", "dataset": dataset, "solution": worked.strip()},
    )


def _math500(row: Mapping[str, Any], source: str, where: int, dataset: str) -> Problem:
    record = dict(row)
    metadata: dict[str, Any] = {"verifier": "math", "dataset": dataset}
    for extra in ("solution", "subject", "level"):
        if record.get(extra) is not None:
            metadata[extra] = record[extra]
    row_id = record.get("unique_id")
    return Problem(
        prompt=require_text(record, "problem", source, where),
        reference=as_answer(require(record, "answer", source, where)),
        answer_format="boxed",
        id=str(row_id) if row_id else f"{dataset}/{where - 1}",
        metadata=metadata,
    )


def _humaneval(row: Mapping[str, Any], source: str, where: int, dataset: str) -> Problem:
    return humaneval_problem(dict(row), source, where, dataset)


def _aime(row: Mapping[str, Any], source: str, where: int, dataset: str) -> Problem:
    prompt = _column(row, ("problem", "question"), source, where)
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError(f"{source}, row {where}: the problem must be non-empty text")
    reference = as_answer(_column(row, ("answer",), source, where))
    by_lower = {key.lower(): key for key in row}
    id_key = by_lower.get("id")
    row_id = row[id_key] if id_key is not None else None
    metadata: dict[str, Any] = {"verifier": "math", "dataset": dataset}
    solution_key = by_lower.get("solution")
    if solution_key is not None and isinstance(row[solution_key], str):
        metadata["solution"] = row[solution_key]
    return Problem(
        prompt=prompt,
        reference=reference,
        answer_format="boxed",
        id=str(row_id) if row_id is not None else f"{dataset}/{where - 1}",
        metadata=metadata,
    )


KNOWN: tuple[KnownDataset, ...] = (
    KnownDataset(("openai/gsm8k", "gsm8k"), "numeric", "number", _gsm8k, default_config="main"),
    KnownDataset(("huggingfaceh4/math-500",), "math", "boxed", _math500),
    KnownDataset(("openai/openai_humaneval", "openai_humaneval"), "code", "code", _humaneval),
    KnownDataset(
        (
            "ai-mo/aimo-validation-aime",
            "maxwell-jia/aime_2024",
            "huggingfaceh4/aime_2024",
            "math-ai/aime24",
            "math-ai/aime25",
            "opencompass/aime2025",
            "yentinglin/aime_2025",
        ),
        "math",
        "boxed",
        _aime,
    ),
)


def known_dataset(hub_id: str) -> KnownDataset | None:
    """The known family of a Hub name, or None for a dataset threadloom has no mapping for."""
    key = hub_id.lower()
    return next((known for known in KNOWN if key in known.hub_ids), None)
