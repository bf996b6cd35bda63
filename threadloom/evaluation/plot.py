"""Scaling plots: accuracy against completion tokens and wall time, one curve per strategy kind."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from threadloom.errors import MissingDependencyError
from threadloom.evaluation.summary import StrategySummary


def pyplot() -> ModuleType:
    """matplotlib's pyplot on the file-only Agg backend.

    Raises:
        MissingDependencyError: matplotlib is not installed; it comes with the `plots` extra.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError.for_extra("matplotlib", "plots", "Plotting") from None
    return plt


def _kind(label: str) -> str:
    return label.partition(":")[0]


def _plain(text: str) -> str:
    """`text` shown literally: a '$' would otherwise start matplotlib's math notation."""
    return text.replace("$", r"\$")


def _error_bars(values: list[float], intervals: list[tuple[float, float]]) -> list[list[float]]:
    """Matplotlib's asymmetric yerr (below, above) for percentages and their intervals."""
    below = [max(0.0, v - 100 * low) for v, (low, _) in zip(values, intervals, strict=True)]
    above = [max(0.0, 100 * high - v) for v, (_, high) in zip(values, intervals, strict=True)]
    return [below, above]


def plot_scaling(summaries: list[StrategySummary], path: Path, title: str = "") -> Path:
    """Write a PNG with two panels; strategies of one kind at several budgets form a curve.

    Accuracy and coverage points carry their Wilson 95% intervals as error bars.

    Raises:
        MissingDependencyError: matplotlib is not installed (the `plots` extra).
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    kinds: dict[str, list[StrategySummary]] = {}
    for summary in summaries:
        kinds.setdefault(_kind(summary.strategy), []).append(summary)
    panels = (
        (axes[0], "mean_completion_tokens", "completion tokens per problem"),
        (axes[1], "mean_wall_time_s", "wall time per problem (s)"),
    )
    for axis, field, xlabel in panels:
        for kind, group in kinds.items():
            group = sorted(group, key=lambda s: getattr(s, field))
            xs = [getattr(s, field) for s in group]
            ys = [100 * s.accuracy for s in group]
            accuracy = axis.errorbar(
                xs,
                ys,
                yerr=_error_bars(ys, [s.accuracy_ci for s in group]),
                marker="o",
                capsize=3,
                label=_plain(f"{kind} accuracy"),
            )
            cover = [100 * s.coverage for s in group]
            axis.errorbar(
                xs,
                cover,
                yerr=_error_bars(cover, [s.coverage_ci for s in group]),
                marker="x",
                linestyle=":",
                capsize=2,
                color=accuracy.lines[0].get_color(),
                alpha=0.6,
                label=_plain(f"{kind} coverage"),
            )
            for s, x, y in zip(group, xs, ys, strict=True):
                axis.annotate(
                    _plain(s.strategy.partition(":")[2] or s.strategy),
                    (x, y),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=7,
                )
        axis.set_xlabel(xlabel)
        axis.set_ylabel("% of problems")
        axis.set_ylim(-2, 102)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(_plain(title))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
