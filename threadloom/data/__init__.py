"""Evaluation datasets: four bundled benchmarks, two seeded generators, Hub datasets and your
own files.

::

    from threadloom import data

    problems = data.load("gsm8k", limit=50)
    easy = data.load("arithmetic", seed=1, difficulty=2, size=100)
    mine = data.load_jsonl("questions.jsonl", field="q", answer_field="a", verifier="numeric")
    hub = data.load("hf:openai/gsm8k:main:test")          # needs the `datasets` extra
    table = data.load("rows.parquet", field="q", answer_field="a", verifier="numeric")

Every problem names the verifier that grades it in metadata["verifier"].
"""

from __future__ import annotations

from threadloom.data.files import load_jsonl
from threadloom.data.registry import DatasetInfo, list_datasets, load
from threadloom.data.sources import (
    LoadedSet,
    SourceOptions,
    is_source,
    open_source,
    problems_digest,
)

__all__ = [
    "DatasetInfo",
    "LoadedSet",
    "SourceOptions",
    "is_source",
    "list_datasets",
    "load",
    "load_jsonl",
    "open_source",
    "problems_digest",
]
