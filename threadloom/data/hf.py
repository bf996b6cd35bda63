"""The few things threadloom asks of the `datasets` library, imported only when needed."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any

from threadloom.errors import ConfigError, MissingDependencyError

DEFAULT_SPLIT = "test"


def import_datasets(feature: str) -> ModuleType:
    """The `datasets` module, or a MissingDependencyError naming the extra that installs it."""
    try:
        import datasets
    except ImportError:
        raise MissingDependencyError.for_extra("datasets", "datasets", feature) from None
    return datasets


def as_dataset(loaded: Any, split: str | None, source: str) -> Any:
    """One split of what `load_dataset`/`load_from_disk` returned.

    A DatasetDict gives `split`, by default "test" or its only split; a single Dataset is
    returned as it is.

    Raises:
        ConfigError: The split is not there; the message lists the splits that are.
    """
    if not isinstance(loaded, Mapping):
        return loaded
    splits = list(loaded)
    if split is None:
        if DEFAULT_SPLIT in loaded:
            return loaded[DEFAULT_SPLIT]
        if len(splits) == 1:
            return loaded[splits[0]]
        raise ConfigError(f"{source} has splits {', '.join(splits)}; name the one to load")
    if split not in loaded:
        raise ConfigError(
            f"{source} has no split {split!r}; its splits are {', '.join(splits) or 'none'}"
        )
    return loaded[split]


def numbered_rows(table: Any, limit: int | None) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """(row number from 1, row) for the first `limit` rows of a `datasets.Dataset`."""
    count = len(table) if limit is None else min(limit, len(table))
    for index in range(count):
        yield index + 1, table[index]
