"""Compute against difficulty: where a bench's tokens went, by how hard each problem was."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

from threadloom.evaluation.records import BenchRecord
from threadloom.evaluation.summary import latest_records

ORDER = ("easy", "medium", "hard", "none right", "no samples")


class DifficultyRow(BaseModel):
    """One strategy's problems of one difficulty."""

    model_config = ConfigDict(extra="forbid")

    strategy: str
    difficulty: str
    problems: int
    mean_samples: float
    mean_completion_tokens: float
    accuracy: float


def by_difficulty(records: Iterable[BenchRecord]) -> list[DifficultyRow]:
    """Rows for the records that carry a difficulty (`extra['difficulty']`), easiest first."""
    groups: dict[tuple[str, str], list[BenchRecord]] = {}
    for record in latest_records(records):
        level = record.extra.get("difficulty")
        if isinstance(level, str) and record.error is None:
            groups.setdefault((record.strategy, level), []).append(record)
    rows = [
        DifficultyRow(
            strategy=strategy,
            difficulty=level,
            problems=len(rows),
            mean_samples=sum(int(r.extra.get("samples", r.candidates)) for r in rows) / len(rows),
            mean_completion_tokens=sum(r.completion_tokens for r in rows) / len(rows),
            accuracy=sum(r.correct for r in rows) / len(rows),
        )
        for (strategy, level), rows in groups.items()
    ]
    rank = {name: i for i, name in enumerate(ORDER)}
    rows.sort(key=lambda r: (r.strategy, rank.get(r.difficulty, len(ORDER))))
    return rows
