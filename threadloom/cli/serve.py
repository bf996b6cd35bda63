"""`threadloom serve`: the command that starts the OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from threadloom.cli.console import err_console
from threadloom.cli.logs import at_least
from threadloom.cli.options import (
    ClusterOption,
    LogLevelOption,
    OldClusterOption,
    renamed,
    worker_spec,
)
from threadloom.errors import ConfigError, MissingDependencyError
from threadloom.workers.base import Worker

logger = logging.getLogger(__name__)


def serve_command(
    worker: Annotated[
        str | None,
        typer.Option(
            help="Worker spec: 'llamacpp[:model.gguf]' (default), 'openai:URL', ... "
            "(default: $THREADLOOM_WORKER)."
        ),
    ] = None,
    cluster: ClusterOption = None,
    old_cluster: OldClusterOption = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Serve from this Ray cluster ('auto': this machine's).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="THREADLOOM_API_KEY",
            help="Key clients send as a bearer token; required off loopback.",
        ),
    ] = None,
    model_name: Annotated[
        str | None, typer.Option(help="Name of the served model (default: the worker's).")
    ] = None,
    graph_dir: Annotated[
        Path | None, typer.Option(help="Folder of YAML/JSON plans served as named graphs.")
    ] = None,
    max_concurrent_runs: Annotated[int, typer.Option(min=1, help="Runs executing at once.")] = 16,
    max_queued_runs: Annotated[
        int, typer.Option(min=0, help="Requests waiting for a run; past it: 429.")
    ] = 64,
    max_n: Annotated[int, typer.Option(min=1, help="Cap on n and strategy sample counts.")] = 64,
    max_budget_tokens: Annotated[
        int, typer.Option(min=1, help="Cap on completion tokens per request.")
    ] = 262_144,
    max_body_bytes: Annotated[int, typer.Option(min=1024, help="Largest request body.")] = (
        1_048_576
    ),
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log each request (--log-level info).")
    ] = False,
    log_level: LogLevelOption = None,
) -> None:
    """Serve strategies as models over an OpenAI-compatible HTTP API."""
    if verbose:
        at_least(logging.INFO)
    cluster = renamed(cluster, old_cluster, new_flag="--cluster", old_flag="--workers")
    try:
        import uvicorn

        from threadloom.serve.app import create_app
        from threadloom.serve.config import ServeConfig
    except ImportError as exc:
        raise MissingDependencyError.for_extra(
            exc.name or "uvicorn", "serve", "threadloom serve"
        ) from None
    from threadloom.telemetry import configure_from_env

    try:
        config = ServeConfig(
            host=host, port=port, api_key=api_key, model_name=model_name, graph_dir=graph_dir,
            max_concurrent_runs=max_concurrent_runs, max_queued_runs=max_queued_runs,
            max_n=max_n, max_budget_tokens=max_budget_tokens, max_body_bytes=max_body_bytes,
        )
    except ValidationError as exc:
        raise ConfigError(str(exc)) from None
    config.check_security()
    configure_from_env()
    backend = _open_worker(worker_spec(worker, None), cluster, ray_address)
    try:
        app = create_app(config, backend, owns_worker=True)
    except BaseException:
        asyncio.run(backend.close())
        raise
    served = app.state.threadloom.catalog.model_name
    err_console.print(
        f"threadloom serve: http://{host}:{port}/v1 (model {served})",
        markup=False, highlight=False,
    )
    level = logging.getLogger().getEffectiveLevel()
    uvicorn.run(
        app, host=host, port=port, log_level=logging.getLevelName(level).lower(),
        access_log=level <= logging.INFO, timeout_graceful_shutdown=5,
    )


def _open_worker(spec: str | None, cluster: Path | None, ray_address: str | None) -> Worker:
    if cluster is not None or ray_address is not None:
        from threadloom.cli.cluster import cluster_worker

        return cluster_worker(cluster, ray_address, spec)
    from threadloom.workers.registry import make_worker

    return make_worker(spec)
