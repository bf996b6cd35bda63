"""`threadloom trace show`: the thought graph of a run, read back from its JSONL trace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from threadloom.cli.console import console, fail_on, write_json
from threadloom.cli.options import LogLevelOption
from threadloom.errors import ThreadloomError
from threadloom.unicode_text import replace_lone_surrogates_in

trace_app = typer.Typer(
    help="Read thought-graph traces written with --trace.", no_args_is_help=True
)


def _plain(event: Any) -> Any:
    """A trace event as JSON data, whether it was read as a dict or as a typed event."""
    dump = getattr(event, "model_dump", None)
    return dump(mode="json") if callable(dump) else event


@trace_app.command("show")
def trace_show(
    trace: Annotated[Path, typer.Argument(help="A JSONL trace written by --trace.")],
    width: Annotated[int, typer.Option(help="Characters of text shown per node.")] = 70,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the events as one JSON list.")
    ] = False,
    log_level: LogLevelOption = None,
) -> None:
    """Render the thought graph of a run as a tree."""
    from threadloom.cli.display import read_trace_events, trace_tree

    try:
        events = read_trace_events(trace)
    except ThreadloomError as exc:
        raise fail_on(exc) from None
    if as_json:
        data = replace_lone_surrogates_in([_plain(event) for event in events])
        write_json(json.dumps(data, indent=2, default=str))
        return
    console.print(trace_tree(events, max_text=width))
