"""The `threadloom` command line: the only package that imports typer and rich."""

from threadloom.cli.application import app, main

__all__ = ["app", "main"]
