"""`threadloom graph check | show`: validate and draw strategy graphs (YAML/JSON plans)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from threadloom.cli.console import console, fail_on, write_json
from threadloom.cli.options import LogLevelOption
from threadloom.errors import ThreadloomError

graph_app = typer.Typer(
    help="Validate and draw strategy graphs (YAML/JSON plans).",
    no_args_is_help=True,
)

PlanArgument = Annotated[Path, typer.Argument(help="A YAML or JSON plan.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")]


def _load(plan: Path) -> Any:
    from threadloom.orchestrator.plan import load_plan

    try:
        return load_plan(plan)
    except ThreadloomError as exc:
        raise fail_on(exc) from None


def _plan_json(graph: Any) -> str:
    """The validated plan as JSON: its final node, then the plan as a file would write it."""
    plan = graph.model_dump(mode="json", exclude_none=True, by_alias=True)
    return json.dumps({"sink": graph.sink, **plan}, indent=2)


def _print_plan(plan: Path, as_json: bool, render: Callable[[Any], Any]) -> None:
    graph = _load(plan)
    if as_json:
        write_json(_plan_json(graph))
    else:
        console.print(render(graph))


def _ok_line(graph: Any) -> str:
    return f"[green]ok[/]: {len(graph.nodes)} nodes, result from {escape(repr(graph.sink))}"


@graph_app.command("check")
def graph_check(
    plan: PlanArgument, as_json: JsonOption = False, log_level: LogLevelOption = None
) -> None:
    """Validate a plan: acyclic, one final node, joins dominated by forks, known kinds."""
    _print_plan(plan, as_json, _ok_line)


@graph_app.command("show")
def graph_show(
    plan: PlanArgument, as_json: JsonOption = False, log_level: LogLevelOption = None
) -> None:
    """Draw a plan in the terminal."""
    from threadloom.cli.display import graph_tree

    _print_plan(plan, as_json, graph_tree)
