"""Evaluation datasets: four bundled benchmarks, two seeded generators, and your own JSONL.

::

    from threadloom import data

    problems = data.load("gsm8k", limit=50)
    easy = data.load("arithmetic", seed=1, difficulty=2, size=100)
    mine = data.load_jsonl("questions.jsonl", field="q", answer_field="a", verifier="numeric")

Every problem names the verifier that grades it in metadata["verifier"].
"""

from __future__ import annotations

from threadloom.data.jsonl import load_jsonl
from threadloom.data.registry import DatasetInfo, list_datasets, load

__all__ = ["DatasetInfo", "list_datasets", "load", "load_jsonl"]
