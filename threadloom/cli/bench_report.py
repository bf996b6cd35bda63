"""What `threadloom bench` prints: the live status line, the summary and difficulty tables."""

from __future__ import annotations

import time

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from threadloom.cli.console import table_console
from threadloom.evaluation.difficulty import DifficultyRow
from threadloom.evaluation.records import BenchRecord
from threadloom.evaluation.summary import StrategySummary


def status_line(records: list[BenchRecord], started: float) -> str:
    """Accuracy so far per strategy, the decoding rate and the errors, for the progress bar."""
    by: dict[str, list[BenchRecord]] = {}
    for record in records:
        by.setdefault(record.strategy, []).append(record)
    # errors count as wrong, as in the summary
    parts = [
        f"{k} {100 * sum(r.correct and r.error is None for r in v) / len(v):.0f}%"
        for k, v in by.items()
    ]
    tokens = sum(r.completion_tokens for r in records)
    rate = tokens / max(time.perf_counter() - started, 1e-6)
    errors = sum(r.error is not None for r in records)
    tail = f" · {errors} errors" if errors else ""
    return escape(" · ".join(parts) + f" · {rate:.0f} tok/s{tail}")


def _with_interval(share: float, interval: tuple[float, float]) -> str:
    low, high = interval
    return f"{100 * share:.1f}% ({100 * low:.0f}–{100 * high:.0f})"


def print_summary(summaries: list[StrategySummary], title: str) -> None:
    """One row per strategy: accuracy and coverage with intervals, and the compute spent."""
    table = Table(title=Text(title))
    columns = (
        "strategy",
        "problems",
        "errors",
        "accuracy (95% CI)",
        "coverage (95% CI)",
        "gens",
        "prompt tok",
        "compl. tok",
        "verifier",
        "wall s",
        "tok/s",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for s in summaries:
        table.add_row(
            Text(s.strategy),
            f"{s.problems}",
            f"[red]{s.errors}[/]" if s.errors else "0",
            _with_interval(s.accuracy, s.accuracy_ci),
            _with_interval(s.coverage, s.coverage_ci),
            f"{s.mean_generations:.1f}",
            f"{s.mean_prompt_tokens:.0f}",
            f"{s.mean_completion_tokens:.0f}",
            f"{s.mean_verifier_calls:.1f}",
            f"{s.total_wall_time_s:.1f}",
            f"{s.tokens_per_s:.0f}",
        )
    out = table_console()
    out.print(table)
    out.print(
        "[dim]accuracy: chosen answer correct · coverage: any candidate correct "
        "(pass@k); both over all problems, errors counted wrong, with Wilson 95% intervals · "
        "gens/tokens/verifier: means per finished problem · wall s: summed per-problem time "
        "(problems overlap)[/]"
    )


def print_difficulty(rows: list[DifficultyRow]) -> None:
    """Tokens per problem against difficulty (the batch-budget mode's records)."""
    if not rows:
        return
    table = Table(title="tokens per problem against difficulty (share of its samples right)")
    for column in ("strategy", "difficulty", "problems", "samples", "compl. tok", "accuracy"):
        left = column in ("strategy", "difficulty")
        table.add_column(column, justify="left" if left else "right")
    for row in rows:
        table.add_row(
            Text(row.strategy),
            row.difficulty,
            f"{row.problems}",
            f"{row.mean_samples:.1f}",
            f"{row.mean_completion_tokens:.0f}",
            f"{100 * row.accuracy:.0f}%",
        )
    table_console().print(table)
