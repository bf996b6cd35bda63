"""Per-strategy summaries of bench records: accuracy, coverage and compute."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

from threadloom.evaluation.records import BenchRecord


class StrategySummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy: str
    problems: int
    errors: int
    accuracy: float
    """Share of problems whose chosen answer is correct."""
    coverage: float
    """Share of problems with at least one correct candidate (pass@k)."""
    mean_generations: float
    mean_prompt_tokens: float
    mean_completion_tokens: float
    mean_verifier_calls: float
    mean_wall_time_s: float
    total_wall_time_s: float
    tokens_per_s: float
    truncated: int


def summarize(records: Iterable[BenchRecord]) -> list[StrategySummary]:
    """One summary per strategy label, in the order strategies first appear.

    A (problem, strategy) pair recorded more than once counts once: the last record wins.
    """
    latest: dict[tuple[str, str, str, int], BenchRecord] = {}
    for record in records:
        latest[record.key()] = record
    by_strategy: dict[str, list[BenchRecord]] = {}
    for record in latest.values():
        by_strategy.setdefault(record.strategy, []).append(record)
    summaries = []
    for strategy, rows in by_strategy.items():
        ok = [r for r in rows if r.error is None]
        count = len(ok) or 1
        wall = sum(r.wall_time_s for r in ok)
        tokens = sum(r.completion_tokens for r in ok)
        summaries.append(
            StrategySummary(
                strategy=strategy,
                problems=len(ok),
                errors=len(rows) - len(ok),
                accuracy=sum(r.correct for r in ok) / count,
                coverage=sum(r.covered for r in ok) / count,
                mean_generations=sum(r.generations for r in ok) / count,
                mean_prompt_tokens=sum(r.prompt_tokens for r in ok) / count,
                mean_completion_tokens=tokens / count,
                mean_verifier_calls=sum(r.verifier_calls for r in ok) / count,
                mean_wall_time_s=wall / count,
                total_wall_time_s=wall,
                tokens_per_s=tokens / wall if wall > 0 else 0.0,
                truncated=sum(r.truncated for r in ok),
            )
        )
    return summaries
