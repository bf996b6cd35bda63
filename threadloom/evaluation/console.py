"""The consoles the bench commands print to, and their one-line typed-error exit."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.text import Text

console = Console()
err_console = Console(stderr=True)
WIDE = 150
"""Width for tables when output is not a terminal (files, pipes, CI logs)."""


def fail(message: str) -> typer.Exit:
    """Print 'error: message' (taken literally, never as markup) and return exit code 2."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", message))
    return typer.Exit(2)
