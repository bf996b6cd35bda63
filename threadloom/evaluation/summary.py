"""Per-strategy summaries of bench records: accuracy, coverage (with 95% intervals) and compute."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

from threadloom.evaluation.records import BenchRecord
from threadloom.evaluation.stats import wilson_interval


class StrategySummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy: str
    problems: int
    """Problems attempted, failed ones included."""
    errors: int
    """Problems that failed with an error; they count as wrong in accuracy and coverage."""
    correct: int
    """Problems whose chosen answer is correct."""
    covered: int
    """Problems with at least one correct candidate."""
    accuracy: float
    """Share of problems whose chosen answer is correct."""
    accuracy_ci: tuple[float, float]
    """Wilson 95% interval of `accuracy`."""
    coverage: float
    """Share of problems with at least one correct candidate (pass@k)."""
    coverage_ci: tuple[float, float]
    """Wilson 95% interval of `coverage`."""
    mean_generations: float
    """Means of compute are over the problems that finished without an error."""
    mean_prompt_tokens: float
    mean_completion_tokens: float
    mean_verifier_calls: float
    mean_wall_time_s: float
    total_wall_time_s: float
    tokens_per_s: float
    truncated: int


def latest_records(records: Iterable[BenchRecord]) -> list[BenchRecord]:
    """One record per (dataset, problem, strategy, seed): the last one wins (a retry)."""
    latest: dict[tuple[str, str, str, int], BenchRecord] = {}
    for record in records:
        latest[record.key()] = record
    return list(latest.values())


def summarize(records: Iterable[BenchRecord]) -> list[StrategySummary]:
    """One summary per strategy label, in the order strategies first appear.

    A (problem, strategy) pair recorded more than once counts once: the last record wins.
    Accuracy and coverage are over all problems, a failed one counting as wrong.
    """
    by_strategy: dict[str, list[BenchRecord]] = {}
    for record in latest_records(records):
        by_strategy.setdefault(record.strategy, []).append(record)
    summaries = []
    for strategy, rows in by_strategy.items():
        ok = [r for r in rows if r.error is None]
        finished = len(ok) or 1
        total = len(rows)
        correct = sum(r.correct for r in ok)
        covered = sum(r.covered for r in ok)
        wall = sum(r.wall_time_s for r in ok)
        tokens = sum(r.completion_tokens for r in ok)
        summaries.append(
            StrategySummary(
                strategy=strategy,
                problems=total,
                errors=total - len(ok),
                correct=correct,
                covered=covered,
                accuracy=correct / total,
                accuracy_ci=wilson_interval(correct, total),
                coverage=covered / total,
                coverage_ci=wilson_interval(covered, total),
                mean_generations=sum(r.generations for r in ok) / finished,
                mean_prompt_tokens=sum(r.prompt_tokens for r in ok) / finished,
                mean_completion_tokens=tokens / finished,
                mean_verifier_calls=sum(r.verifier_calls for r in ok) / finished,
                mean_wall_time_s=wall / finished,
                total_wall_time_s=wall,
                tokens_per_s=tokens / wall if wall > 0 else 0.0,
                truncated=sum(r.truncated for r in ok),
            )
        )
    return summaries
