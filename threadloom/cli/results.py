"""How `threadloom run` shows a Result: a candidates table, or JSON."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from pydantic_core import PydanticSerializationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from threadloom.cli.console import table_console
from threadloom.types import Result
from threadloom.unicode_text import replace_lone_surrogates, replace_lone_surrogates_in


def result_json(result: Result) -> str:
    """The Result as indented JSON; text that is not valid Unicode shows as U+FFFD."""
    try:
        return result.model_dump_json(indent=2)
    except PydanticSerializationError:  # a lone surrogate in some prompt or model text
        data = replace_lone_surrogates_in(result.model_dump(mode="json"))
        return TypeAdapter(Any).dump_json(data, indent=2).decode()


def print_result(result: Result, out: Console | None = None) -> None:
    """The candidates table, usage and answer; model text is shown as text, never as markup."""
    out = out or table_console()
    shown = replace_lone_surrogates  # an undecodable byte in model text would fail to print
    table = Table(title=Text(shown(f"candidates ({result.strategy})")), show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("answer", max_width=24, overflow="ellipsis", no_wrap=True)
    table.add_column("votes", justify="right")
    table.add_column("scores")
    table.add_column("logprob", justify="right")
    table.add_column("tokens", justify="right")
    table.add_column("text", overflow="ellipsis", no_wrap=True, max_width=48)
    for i, candidate in enumerate(result.candidates):
        scores = ", ".join(f"{k}={v.shown()}" for k, v in candidate.scores.items())
        logprob = f"{candidate.mean_logprob:.3f}" if candidate.mean_logprob is not None else ""
        snippet = " ".join(candidate.text.split())[:60]
        table.add_row(
            str(i + 1),
            Text(shown(candidate.answer or "")),
            str(candidate.votes or ""),
            Text(shown(scores)),
            logprob,
            str(candidate.completion_tokens),
            Text(shown(snippet)),
        )
    out.print(table)
    usage = result.usage
    out.print(
        f"[dim]generations {usage.generations} · prompt tokens {usage.prompt_tokens} "
        f"({usage.cached_prompt_tokens} cached) · completion tokens {usage.completion_tokens} · "
        f"verifier calls {usage.verifier_calls} · {usage.wall_time_s:.2f}s · "
        f"{usage.tokens_per_s:.1f} tok/s{' · TRUNCATED by budget' if result.truncated else ''}[/]"
    )
    answer = result.answer if result.answer is not None else "-"
    out.print(Text.assemble(("answer:", "bold green"), " ", shown(answer)))
