"""The consoles every command prints to, and the one-line typed-error exit."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.text import Text

from threadloom.errors import ThreadloomError
from threadloom.exit_codes import USAGE, exit_code_for
from threadloom.unicode_text import replace_lone_surrogates

console = Console()
err_console = Console(stderr=True)
WIDE = 150
"""Width for tables when output is not a terminal (files, pipes, CI logs)."""


def print_error(message: str) -> None:
    """'error: message' on stderr as one line (never wrapped, so logs can be searched); the
    message (user and model text) is never read as markup."""
    text = Text.assemble(("error:", "bold red"), " ", replace_lone_surrogates(message))
    err_console.print(text, soft_wrap=True)


def warn(message: str) -> None:
    """'warning: message' on stderr, taken literally."""
    text = Text(f"warning: {replace_lone_surrogates(message)}", style="yellow")
    err_console.print(text, highlight=False, soft_wrap=True)


def fail(message: str, code: int = USAGE) -> typer.Exit:
    """Print 'error: message' (taken literally, never as markup); exit 2 unless told otherwise."""
    print_error(message)
    return typer.Exit(code)


def fail_on(exc: ThreadloomError) -> typer.Exit:
    """Print a typed error; exit 2 for bad usage or configuration, 3 for a failed run."""
    return fail(str(exc), exit_code_for(exc))


def write_json(text: str) -> None:
    """One JSON document on stdout, as it is (no console wrapping or markup)."""
    sys.stdout.write(text + "\n")


def table_console() -> Console:
    """The stdout console for tables: a wide one when output is not a terminal."""
    return console if console.is_terminal else Console(width=WIDE)
