"""Logging of the command line: one handler on the root logger, at the level asked for.

The library only creates loggers; this module alone installs a handler. On a terminal the
handler prints through the stderr console, so a warning does not tear a live view; elsewhere
(pipes, CI logs) it writes plain, unwrapped lines.
"""

from __future__ import annotations

import logging
import sys
from enum import StrEnum

from rich.logging import RichHandler

from threadloom.cli.console import err_console


class LogLevel(StrEnum):
    """Levels `--log-level` accepts."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"
    critical = "critical"


LOG_LEVEL_ENV = "THREADLOOM_LOG_LEVEL"
DEFAULT_LEVEL = "warning"

_OURS = "_threadloom_cli_handler"
"""Marks the handler this module installed, so a second call replaces it."""


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time of each record (tests swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def configure_logging(level: str | None) -> None:
    """Log at `level` (a `LogLevel` name; None: the default) to stderr."""
    name = (level or DEFAULT_LEVEL).lower()
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
    handler: logging.Handler
    if err_console.is_terminal:
        handler = RichHandler(console=err_console, show_time=False, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    setattr(handler, _OURS, True)
    root.addHandler(handler)
    root.setLevel(name.upper())


def at_least(level: int) -> None:
    """Lower the level to `level` when it is quieter (`-v` asks for INFO at least)."""
    root = logging.getLogger()
    if root.level > level:
        root.setLevel(level)
