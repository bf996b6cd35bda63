"""The `threadloom` command: the Typer app, its global options and the console entry point.

Each command lives in its own module; this one only puts them together.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from typing import Annotated

import typer

from threadloom.cli.bench import bench_app
from threadloom.cli.console import err_console, print_error
from threadloom.cli.graph import graph_app
from threadloom.cli.listings import strategies_command, verifiers_command, workers_command
from threadloom.cli.options import TopLogLevelOption
from threadloom.cli.run import run_command
from threadloom.cli.sandbox import sandbox_app
from threadloom.cli.serve import serve_command
from threadloom.cli.trace import trace_app
from threadloom.errors import ThreadloomError
from threadloom.exit_codes import UNEXPECTED, exit_code_for
from threadloom.unicode_text import replace_lone_surrogates

app = typer.Typer(
    help="threadloom: fan a problem out to many parallel generations, verify, and merge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def version() -> str:
    """The installed threadloom version."""
    try:
        return metadata.version("threadloom")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"threadloom {version()}\n")
        raise typer.Exit()


@app.callback()
def global_options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
    log_level: TopLogLevelOption = None,
) -> None:
    """threadloom: fan a problem out to many parallel generations, verify, and merge."""


app.command("run")(run_command)
app.command("workers")(workers_command)
app.command("strategies")(strategies_command)
app.command("verifiers")(verifiers_command)
app.command("serve")(serve_command)
app.add_typer(bench_app, name="bench")
app.add_typer(graph_app, name="graph")
app.add_typer(trace_app, name="trace")
app.add_typer(sandbox_app, name="sandbox")


def main() -> None:
    """Console entry point: typed errors become one red line, never a bare traceback."""
    try:
        app()
    except ThreadloomError as exc:
        print_error(str(exc))
        sys.exit(exit_code_for(exc))
    except Exception as exc:  # the last line of defence for the CLI only
        if os.environ.get("THREADLOOM_DEBUG"):
            raise
        # no markup and no highlighting here: this must print whatever the message holds
        err_console.print(
            replace_lone_surrogates(f"unexpected error: {type(exc).__name__}: {exc}\n")
            + "set THREADLOOM_DEBUG=1 for the traceback",
            markup=False,
            highlight=False,
            emoji=False,
        )
        sys.exit(UNEXPECTED)


if __name__ == "__main__":
    main()
