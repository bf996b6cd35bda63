"""Datasets named by where they live: `hf:NAME[:CONFIG]:SPLIT` on the Hub, or a local path."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from threadloom.data.files import is_data_path, load_file
from threadloom.data.hub import PREFIX, load_hub, parse_hub_spec
from threadloom.data.jsonl import check_limit
from threadloom.data.known import known_dataset
from threadloom.data.rows import FieldMapping
from threadloom.types import AnswerFormat, Problem


class SourceOptions(BaseModel):
    """How to read a Hub dataset or a data file; None leaves a choice to the dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str | None = None
    """The question column (default "question"; a known Hub dataset uses its own)."""
    answer_field: str | None = None
    """The reference-answer column (default "answer"; a known Hub dataset uses its own)."""
    id_field: str | None = None
    """A row-id column; by default rows are numbered."""
    answer_format: AnswerFormat | None = None
    """How answers are written (default: the known dataset's, else "text")."""
    verifier: str | None = None
    """The grader (default: the known dataset's own; a file or an unknown set has none)."""
    split: str | None = None
    """For a folder with several splits; a Hub spec names its split after the last ':'."""

    def mapping(self, *, verifier: str | None = None, answer_format: AnswerFormat = "text") -> (
        FieldMapping
    ):
        """The field mapping these options give, over the dataset's own defaults."""
        return FieldMapping(
            field=self.field or "question",
            answer_field=self.answer_field or "answer",
            id_field=self.id_field,
            answer_format=self.answer_format or answer_format,
            verifier=self.verifier or verifier,
        )

    @property
    def maps_columns(self) -> bool:
        """Whether any column was named."""
        return any(c is not None for c in (self.field, self.answer_field, self.id_field))


class LoadedSet(BaseModel):
    """Problems loaded from a Hub dataset or a file, with what identifies them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    """A short, file-name-safe name (`gsm8k-main-test`, a file's stem)."""
    problems: list[Problem]
    identity: dict[str, Any]
    """The source and a digest of the problems as loaded: equal only for the same problems."""


def is_source(name: str) -> bool:
    """Whether `name` is a Hub spec (`hf:...`) or the path of a data file or folder."""
    return name.strip().lower().startswith(PREFIX) or is_data_path(name)


def open_source(
    name: str, options: SourceOptions | None = None, *, limit: int | None = None
) -> LoadedSet:
    """Load a Hub dataset or a local data file through one loader.

    Args:
        name: `hf:NAME[:CONFIG]:SPLIT` (e.g. `hf:openai/gsm8k:main:test`), or the path of a
            JSONL, Parquet, Arrow, JSON or CSV file or a `save_to_disk` folder.
        options: Field mapping and grader; a known Hub dataset (GSM8K, MATH-500, HumanEval,
            AIME sets) needs none and grades with its own verifier.
        limit: Keep only the first N problems.

    Raises:
        ConfigError: A bad spec or path, a missing column, or no such split.
        MissingDependencyError: Anything but JSONL without the `datasets` extra.
        DatasetUnavailableError: A Hub dataset neither cached nor reachable.
    """
    check_limit(limit)
    options = options or SourceOptions()
    if name.strip().lower().startswith(PREFIX):
        spec = parse_hub_spec(name)
        known = known_dataset(spec.name)
        mapping = None
        if options.maps_columns or known is None:
            defaults: dict[str, Any] = (
                {"verifier": known.verifier, "answer_format": known.answer_format}
                if known is not None
                else {}
            )
            mapping = options.mapping(**defaults)
        problems = [_regraded(p, options) for p in load_hub(spec, mapping, limit=limit)]
        set_name, source = spec.set_name, str(spec)
    else:
        path = Path(name)
        problems = load_file(path, options.mapping(), split=options.split, limit=limit)
        set_name, source = path.stem, str(path)
    return LoadedSet(
        name=set_name,
        problems=problems,
        identity={"source": source, "problems_sha256": problems_digest(problems)},
    )


def _regraded(problem: Problem, options: SourceOptions) -> Problem:
    """A known dataset's problem with the grader and answer format the options name."""
    changes: dict[str, Any] = {}
    if options.answer_format is not None:
        changes["answer_format"] = options.answer_format
    if options.verifier is not None:
        changes["metadata"] = {**problem.metadata, "verifier": options.verifier}
    return problem.model_copy(update=changes) if changes else problem


def problems_digest(problems: list[Problem]) -> str:
    """A SHA-256 over the problems as loaded: prompts, references, ids and metadata."""
    digest = hashlib.sha256()
    for problem in problems:
        digest.update(json.dumps(problem.model_dump(mode="json"), sort_keys=True).encode())
        digest.update(b"\n")
    return digest.hexdigest()
