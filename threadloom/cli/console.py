"""The consoles the bench commands print to, and their one-line typed-error exit."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.text import Text

from threadloom.exit_codes import USAGE

console = Console()
err_console = Console(stderr=True)
WIDE = 150
"""Width for tables when output is not a terminal (files, pipes, CI logs)."""


def fail(message: str, code: int = USAGE) -> typer.Exit:
    """Print 'error: message' (taken literally, never as markup); exit 2 unless told otherwise."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", message))
    return typer.Exit(code)
