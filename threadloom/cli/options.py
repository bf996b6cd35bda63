"""Options several commands share: `--log-level`, `--cluster` (and its old name), and the
worker defaults read from the environment. `--config FILE` lives in `config_file`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from threadloom.cli.console import fail, warn
from threadloom.cli.logs import LOG_LEVEL_ENV, LogLevel, configure_logging
from threadloom.workers.registry import spec_with_defaults

WORKER_ENV = "THREADLOOM_WORKER"


def _set_level(value: LogLevel | None) -> None:
    if value is not None:
        configure_logging(value.value)


def _set_level_or_default(value: LogLevel | None) -> None:
    configure_logging(value.value if value is not None else None)


def _log_level(callback: Callable[[LogLevel | None], None], help_text: str) -> Any:
    return typer.Option(
        "--log-level",
        envvar=LOG_LEVEL_ENV,
        show_envvar=True,
        case_sensitive=False,
        is_eager=True,
        expose_value=False,
        callback=callback,
        help=help_text,
    )


LogLevelOption = Annotated[
    LogLevel | None, _log_level(_set_level, "Logging detail on stderr (default: warning).")
]
"""`--log-level LEVEL` of a command (also $THREADLOOM_LOG_LEVEL); every command declares it
as `log_level: LogLevelOption = None`."""

TopLogLevelOption = Annotated[
    LogLevel | None,
    _log_level(
        _set_level_or_default,
        "Logging detail on stderr (default: warning). Every command also takes it.",
    ),
]
"""`threadloom --log-level`: sets logging up on every call, at the default level when unset."""

ClusterOption = Annotated[
    Path | None, typer.Option("--cluster", help="Cluster file (YAML): pools of Ray actors.")
]
"""`--cluster FILE`, formerly `--workers` (one letter from `--worker`)."""

OldClusterOption = Annotated[Path | None, typer.Option("--workers", hidden=True)]
"""The old name of `--cluster`: still read, with a warning (see `renamed`)."""


def renamed(new: Any, old: Any, *, new_flag: str, old_flag: str) -> Any:
    """The value of a renamed flag, accepting its old spelling with a warning."""
    if old is None:
        return new
    if new is not None:
        raise fail(f"give {new_flag} only ({old_flag} is its old name)")
    warn(f"{old_flag} is deprecated; use {new_flag}")
    return old


def worker_spec(worker: str | None, model: Path | None) -> str | None:
    """The worker spec from `--worker`/`--model`, else $THREADLOOM_WORKER, else None (the
    bundled model); a bare 'openai' gets $OPENAI_BASE_URL written out."""
    if model is not None and worker is not None:
        raise fail("give --model or --worker, not both")
    if model is not None:
        return f"llamacpp:{model}"
    spec = worker or os.environ.get(WORKER_ENV, "").strip()
    return spec_with_defaults(spec) if spec else None
