"""Your own data files: JSONL read directly; Parquet, Arrow, JSON, CSV and `save_to_disk`
folders through the `datasets` library (the `datasets` extra)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from threadloom.data.hf import as_dataset, import_datasets, numbered_rows
from threadloom.data.jsonl import check_limit, iter_records
from threadloom.data.rows import FieldMapping, check_answer_format, rows_problems
from threadloom.errors import ConfigError
from threadloom.types import AnswerFormat, Problem

BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".csv": "csv"}
"""File suffix -> the `datasets` builder that reads it."""

DATA_SUFFIXES = (".jsonl", *BUILDERS)


def is_data_path(name: str) -> bool:
    """Whether `name` names a data file (by its suffix) or an existing folder."""
    return Path(name).suffix.lower() in DATA_SUFFIXES or Path(name).is_dir()


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
    check_answer_format(answer_format)
    mapping = FieldMapping(
        field=field,
        answer_field=answer_field,
        id_field=id_field,
        answer_format=answer_format,
        verifier=verifier,
    )
    return load_file(path, mapping, limit=limit)


def load_file(
    path: str | os.PathLike[str],
    mapping: FieldMapping,
    *,
    split: str | None = None,
    limit: int | None = None,
) -> list[Problem]:
    """Load problems from a JSONL, Parquet, Arrow, JSON or CSV file, or a `save_to_disk` folder.

    Args:
        path: The file or folder.
        mapping: Which columns hold the question, answer and id, and how to grade them.
        split: For a folder holding several splits (a saved DatasetDict): which one; by
            default "test", or the only one there is.
        limit: Read only the first N problems.

    Raises:
        ConfigError: The file is missing, unreadable or of an unknown kind, or a row lacks a
            mapped column.
        MissingDependencyError: A Parquet/Arrow/JSON/CSV file or a folder, without the
            `datasets` extra installed.
    """
    check_limit(limit)
    file = Path(path)
    if not file.exists():
        raise ConfigError(f"{file}: no such file or folder; pass the path of a data file")
    suffix = file.suffix.lower()
    if file.is_file() and suffix == ".jsonl":
        rows: Iterator[tuple[int, Mapping[str, Any]]] = iter_records(_read_text(file), str(file))
    elif file.is_dir() or suffix in BUILDERS:
        rows = numbered_rows(_open_table(file, split), limit)
    else:
        raise ConfigError(
            f"{file}: unknown kind of data file; use one of {', '.join(DATA_SUFFIXES)} "
            "or a folder written by Dataset.save_to_disk"
        )
    return rows_problems(rows, mapping, dataset=file.stem, source=str(file), limit=limit)


def _read_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read it as UTF-8 text ({exc})") from None


def _open_table(file: Path, split: str | None) -> Any:
    """The rows of a file or folder as a `datasets.Dataset`."""
    datasets = import_datasets(f"Reading {file.name}")
    try:
        if file.is_dir():
            loaded = datasets.load_from_disk(str(file))
        else:
            loaded = datasets.load_dataset(BUILDERS[file.suffix.lower()], data_files=str(file))
    except Exception as exc:  # the library raises many kinds on a malformed file
        raise ConfigError(
            f"{file}: cannot read it as a dataset ({type(exc).__name__}: {exc}); a folder must "
            "be one written by Dataset.save_to_disk or DatasetDict.save_to_disk"
        ) from None
    if file.is_file():
        split = None  # a single file is one table, whatever its builder calls the split
    return as_dataset(loaded, split, str(file))
