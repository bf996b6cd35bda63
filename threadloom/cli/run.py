"""`threadloom run`: one problem, one strategy (or plan), on one worker."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from pydantic import ValidationError

from threadloom.cli.config_file import config_option
from threadloom.cli.console import err_console, fail, fail_on, warn, write_json
from threadloom.cli.logs import at_least
from threadloom.cli.options import (
    ClusterOption,
    LogLevelOption,
    OldClusterOption,
    renamed,
    worker_spec,
)
from threadloom.cli.results import print_result, result_json
from threadloom.errors import ThreadloomError
from threadloom.exit_codes import INTERRUPTED
from threadloom.types import Budget, SamplingParams
from threadloom.unicode_text import first_lone_surrogate, replace_lone_surrogates


def _valid_text(value: str, what: str) -> str:
    """Command-line text with undecodable bytes (not UTF-8) replaced by U+FFFD, with a warning."""
    if first_lone_surrogate(value) is None:
        return value
    warn(f"{what} is not valid UTF-8; undecodable bytes were replaced by U+FFFD")
    return replace_lone_surrogates(value)


def _open_trace(path: Path) -> TextIO:
    """The --trace file, opened for appending, or a usage error that says how to fix the path."""
    if path.is_dir():
        raise fail(f"--trace {path} is a directory; name a file in it, e.g. {path / 'run.jsonl'}")
    if not path.parent.is_dir():
        raise fail(
            f"--trace {path}: the directory {path.parent} does not exist; create it first "
            f"(mkdir -p {path.parent}) or choose another path"
        )
    try:
        return path.open("a", encoding="utf-8")
    except OSError as exc:
        raise fail(f"--trace {path} cannot be written: {exc.strerror or exc}") from None


def _trace_line(event: Any) -> str:
    """One JSONL line of the trace, from a typed event or its plain-dict form."""
    dump = getattr(event, "model_dump", None)
    data = dump() if callable(dump) else event  # python mode: a lone surrogate still dumps
    return json.dumps(data, default=str) + "\n"


def run_command(
    prompt: Annotated[str, typer.Argument(help="The question or task to solve.")],
    strategy: Annotated[
        str, typer.Option("--strategy", "-s", help="single, best-of-n, self-consistency, ...")
    ] = "best-of-n",
    n: Annotated[
        int | None, typer.Option("-n", "--n", min=1, help="Samples for best-of-n and voting.")
    ] = None,
    verifier: Annotated[
        str | None,
        typer.Option(help="numeric, math, regex:PATTERN, contains:a,b, code, game24, rules."),
    ] = None,
    reference: Annotated[
        str | None, typer.Option(help="The known answer, for verifiers that compare.")
    ] = None,
    sandbox: Annotated[
        str | None,
        typer.Option(help="Isolation for --verifier code: bwrap (default), or guards (weaker)."),
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="A GGUF model file (default: bundled SmolLM2-135M).")
    ] = None,
    worker: Annotated[
        str | None,
        typer.Option(
            help="Worker spec instead of --model, e.g. 'fake:42' (default: $THREADLOOM_WORKER)."
        ),
    ] = None,
    cluster: ClusterOption = None,
    old_cluster: OldClusterOption = None,
    ray_address: Annotated[
        str | None,
        typer.Option(help="Run on this Ray cluster ('auto': the one on this machine)."),
    ] = None,
    system: Annotated[str | None, typer.Option(help="A system prompt.")] = None,
    temperature: Annotated[float, typer.Option(min=0.0, max=5.0)] = 0.7,
    top_p: Annotated[float, typer.Option(min=0.01, max=1.0)] = 0.95,
    max_tokens: Annotated[int, typer.Option(min=1, help="Token limit per generation.")] = 256,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible sampling.")] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            help="Any other sampling field, repeatable: top_k=20, min_p=0.05, "
            '\'structured_outputs={"choice": ["yes", "no"]}\'.',
        ),
    ] = None,
    max_generations: Annotated[int | None, typer.Option(min=1, help="Budget: generations.")] = None,
    max_completion_tokens: Annotated[
        int | None, typer.Option(min=1, help="Budget: completion tokens in all.")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(min=0.001, help="Budget: wall-clock seconds.")
    ] = None,
    trace: Annotated[
        Path | None,
        typer.Option("--trace", help="Write every trace event to this JSONL file."),
    ] = None,
    old_trace: Annotated[Path | None, typer.Option("--events", hidden=True)] = None,
    graph: Annotated[
        Path | None, typer.Option(help="Run a strategy graph from a YAML/JSON plan file.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the Result as JSON.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log progress (--log-level info).")
    ] = False,
    config: Annotated[Path | None, config_option()] = None,
    log_level: LogLevelOption = None,
) -> None:
    """Solve one problem with a strategy on the embedded model (or another worker)."""
    if verbose:
        at_least(logging.INFO)
    from threadloom.cli.progress import LiveRun
    from threadloom.orchestrator.runner import arun
    from threadloom.telemetry import configure_from_env

    configure_from_env()  # spans of the run when OTEL_* variables ask for an exporter

    cluster = renamed(cluster, old_cluster, new_flag="--cluster", old_flag="--workers")
    trace = renamed(trace, old_trace, new_flag="--trace", old_flag="--events")
    spec = worker_spec(worker, model)
    if not prompt.strip():
        raise fail("the prompt is empty: pass the question, e.g. threadloom run 'What is 2+2?'")
    prompt = _valid_text(prompt, "the prompt")
    system = _valid_text(system, "--system") if system is not None else None
    reference = _valid_text(reference, "--reference") if reference is not None else None
    if sandbox is not None:
        if verifier != "code":
            raise fail("--sandbox applies to --verifier code only")
        verifier = f"code:{sandbox}"
    try:
        from threadloom.cli.sampling_flags import parse_param_flags

        params = SamplingParams(
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            seed=None,
            **parse_param_flags(param or []),
        )
        budget = Budget(
            max_generations=max_generations,
            max_completion_tokens=max_completion_tokens,
            max_wall_time_s=timeout,
        )
    except ValidationError as exc:
        raise fail(str(exc)) from None
    except ThreadloomError as exc:
        raise fail_on(exc) from None
    plan: Any = strategy
    if graph is not None:
        from threadloom.orchestrator.plan import load_plan

        try:
            plan = load_plan(graph)
        except ThreadloomError as exc:
            raise fail_on(exc) from None
    pool: Any = None
    if cluster is not None or ray_address is not None:
        from threadloom.cli.cluster import cluster_worker

        try:
            pool = cluster_worker(cluster, ray_address, spec)
        except ThreadloomError as exc:
            raise fail_on(exc) from None
    sink_file = _open_trace(trace) if trace else None
    display = LiveRun(err_console, f"{graph or strategy}") if not as_json else None

    def on_event(event: Any) -> None:
        if sink_file is not None:
            sink_file.write(_trace_line(event))
        if display is not None:
            display(event)

    options: dict[str, Any] = {"n": n} if n is not None else {}
    try:
        if display is not None:
            display.__enter__()
        result = asyncio.run(
            arun(
                prompt,
                plan,
                worker=pool or spec,
                verifier=verifier,
                reference=reference,
                system=system,
                params=params,
                budget=budget,
                seed=seed,
                on_event=on_event,
                **options,
            )
        )
    except ThreadloomError as exc:
        raise fail_on(exc) from None
    except KeyboardInterrupt:
        raise fail("interrupted", code=INTERRUPTED) from None
    finally:
        if display is not None:
            display.__exit__(None, None, None)
        if sink_file is not None:
            sink_file.close()
        if pool is not None:
            asyncio.run(pool.close())
    if as_json:
        write_json(result_json(result))
    else:
        print_result(result)
