"""`threadloom bench compare`: two runs side by side, paired problem by problem."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from threadloom.cli.console import fail, table_console, write_json
from threadloom.cli.options import LogLevelOption
from threadloom.errors import ConfigError
from threadloom.evaluation.compare import Comparison, compare_runs


def _percent(share: float) -> str:
    return f"{100 * share:.1f}%"


def print_comparison(comparison: Comparison) -> None:
    """The paired table, the two sides and how their settings differ."""
    a, b = comparison.first, comparison.second
    table = Table(
        title=Text(f"{comparison.shared} shared problems · A = {a.strategy} · B = {b.strategy}")
    )
    for column in ("metric", "A", "B", "B − A (95% CI)", "only A", "only B", "McNemar p"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for m in comparison.metrics:
        low, high = m.difference_ci
        table.add_row(
            m.metric,
            _percent(m.first),
            _percent(m.second),
            f"{100 * m.difference:+.1f} ({100 * low:+.1f}, {100 * high:+.1f}) pt",
            str(m.only_first),
            str(m.only_second),
            f"{m.p_value:.3g}",
        )
    out = table_console()
    out.print(table)
    out.print(
        "[dim]only A / only B: problems one side got right and the other wrong (both and neither "
        "are left out of the test) · CI: paired bootstrap over problems · McNemar: exact, "
        "two-sided[/]"
    )
    for tag, side in (("A", a), ("B", b)):
        errors = f", {side.errors} failed (counted wrong)" if side.errors else ""
        out.print(Text(f"{tag}: {side.strategy} in {side.path} ({side.problems} problems{errors})"))
    if comparison.settings_differ:
        out.print(Text("settings differ: " + "; ".join(comparison.settings_differ)))
    else:
        out.print(Text("settings: identical apart from the strategy"))


def compare_command(
    first: Annotated[Path, typer.Argument(help="Results of run A (bench --out).")],
    second: Annotated[Path, typer.Argument(help="Results of run B (may be the same file).")],
    first_strategy: Annotated[
        str | None,
        typer.Option("--first-strategy", "-a", help="Strategy label in A, if it holds several."),
    ] = None,
    second_strategy: Annotated[
        str | None,
        typer.Option("--second-strategy", "-b", help="Strategy label in B, if it holds several."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
    log_level: LogLevelOption = None,
) -> None:
    """Compare two strategies on the problems both ran: exact McNemar test and paired bootstrap.

    Problems pair by dataset, problem id and seed; a failed problem counts as wrong.
    """
    try:
        comparison = compare_runs(
            first, second, first_strategy=first_strategy, second_strategy=second_strategy
        )
    except ConfigError as exc:
        raise fail(str(exc)) from None
    if as_json:
        write_json(comparison.model_dump_json(indent=2))
    else:
        print_comparison(comparison)
