"""Datasets from the Hugging Face Hub: `hf:NAME[:CONFIG]:SPLIT` through the `datasets` library.

A name already in the local cache loads without the network (set `HF_DATASETS_OFFLINE=1` to
make sure nothing is fetched); one that is not cached is downloaded once, or, with no network,
refused with a `DatasetUnavailableError` that says how to get it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from threadloom.data.hf import as_dataset, import_datasets, numbered_rows
from threadloom.data.known import KnownDataset, known_dataset
from threadloom.data.rows import FieldMapping, rows_problems
from threadloom.errors import ConfigError, DatasetUnavailableError, ThreadloomError
from threadloom.types import Problem

logger = logging.getLogger(__name__)

PREFIX = "hf:"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class HubSpec:
    """A parsed `hf:NAME[:CONFIG]:SPLIT`."""

    name: str
    config: str | None = None
    split: str | None = None

    @property
    def set_name(self) -> str:
        """A short, file-name-safe name for results: `gsm8k-main-test`."""
        parts = [self.name.rpartition("/")[2], self.config, self.split]
        return "-".join(p for p in parts if p)

    def __str__(self) -> str:
        return PREFIX + ":".join(p for p in (self.name, self.config, self.split) if p)


def parse_hub_spec(text: str) -> HubSpec:
    """Parse `hf:NAME`, `hf:NAME:SPLIT` or `hf:NAME:CONFIG:SPLIT`.

    Raises:
        ConfigError: The spec does not have that shape; the message shows the valid ones.
    """
    body = text.strip()[len(PREFIX) :] if text.strip().lower().startswith(PREFIX) else text
    parts = body.split(":")
    shapes = "hf:NAME, hf:NAME:SPLIT or hf:NAME:CONFIG:SPLIT (e.g. hf:openai/gsm8k:main:test)"
    if not 1 <= len(parts) <= 3 or not _NAME.match(parts[0]):
        raise ConfigError(f"bad Hub dataset {text!r}; write {shapes}")
    if not all(_PART.match(p) for p in parts[1:]):
        raise ConfigError(f"bad config or split in {text!r}; write {shapes}")
    if len(parts) == 1:
        return HubSpec(parts[0])
    if len(parts) == 2:
        return HubSpec(parts[0], split=parts[1])
    return HubSpec(parts[0], config=parts[1], split=parts[2])


def load_hub(
    spec: HubSpec,
    mapping: FieldMapping | None,
    *,
    limit: int | None = None,
) -> list[Problem]:
    """Load a Hub dataset's split as problems.

    Args:
        spec: Which dataset, config and split; without a split "test" (or the only one).
        mapping: Which columns to read; None for a known dataset reads its own columns and
            grades with its own verifier (GSM8K, MATH-500, HumanEval, AIME sets).
        limit: Keep only the first N problems.

    Raises:
        MissingDependencyError: The `datasets` extra is not installed.
        DatasetUnavailableError: Not in the local cache and the Hub cannot be reached.
        ConfigError: No such dataset, config or split, an unknown dataset without a field
            mapping, or a row without a mapped column.
    """
    known = known_dataset(spec.name)
    if mapping is None and known is None:
        raise ConfigError(
            f"{spec}: threadloom does not know this dataset's columns; name them with "
            "field= and answer_field= (--field, --answer-field) and its grader with "
            "verifier= (--grader)"
        )
    table = _open(spec, known)
    spec = HubSpec(
        spec.name,
        spec.config or (known.default_config if known else None),
        spec.split or _split_name(table),
    )
    rows = numbered_rows(table, limit)
    source = str(spec)
    if mapping is None:
        assert known is not None
        return [known.build(row, source, where, spec.set_name) for where, row in rows]
    return rows_problems(rows, mapping, dataset=spec.set_name, source=source, limit=limit)


def _split_name(table: Any) -> str | None:
    split = getattr(table, "split", None)
    return str(split) if split is not None else None


def _open(spec: HubSpec, known: KnownDataset | None) -> Any:
    datasets = import_datasets(f"Loading {spec}")
    config = spec.config or (known.default_config if known else None)
    try:
        loaded = datasets.load_dataset(spec.name, config, split=spec.split)
    except ThreadloomError:
        raise
    except ConnectionError as exc:
        raise DatasetUnavailableError(
            f"{spec} is not in the local Hugging Face cache and the Hub cannot be reached "
            f"({exc}). Download it once where the Hub is reachable (run the same command "
            "there, or datasets.load_dataset), point HF_HOME at a cache that holds it, or "
            "save it with Dataset.save_to_disk / to_parquet and pass that path instead"
        ) from None
    except Exception as exc:  # the library's kinds vary: DatasetNotFoundError, ValueError...
        raise ConfigError(f"{spec}: cannot load it ({type(exc).__name__}: {exc})") from None
    return as_dataset(loaded, None, str(spec))
