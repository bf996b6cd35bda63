"""`threadloom bench`: the evaluation harness on the command line."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from threadloom.errors import ConfigError, ThreadloomError
from threadloom.evaluation.bench import Verifiers, pending_count, run_bench
from threadloom.evaluation.records import BenchRecord, ResultLog
from threadloom.evaluation.summary import StrategySummary, summarize
from threadloom.types import Problem, SamplingParams

console = Console()
err_console = Console(stderr=True)
_WIDE = 150
"""Width for tables when output is not a terminal (files, pipes, CI logs)."""


def _load_problems(
    dataset: str,
    *,
    limit: int | None,
    seed: int,
    field: str,
    answer_field: str,
    grader: str | None,
    difficulty: int | None,
) -> tuple[str, list[Problem]]:
    from threadloom import data

    if dataset.endswith(".jsonl"):
        path = Path(dataset)
        problems = data.load_jsonl(
            path, field=field, answer_field=answer_field, verifier=grader or "numeric", limit=limit
        )
        return path.stem, problems
    options: dict[str, Any] = {"difficulty": difficulty} if difficulty is not None else {}
    return dataset, data.load(dataset, limit=limit, seed=seed, **options)


def _status(records: list[BenchRecord], started: float) -> str:
    by: dict[str, list[BenchRecord]] = {}
    for record in records:
        if record.error is None:
            by.setdefault(record.strategy, []).append(record)
    parts = [
        f"{k.split(':')[0]}{':' + k.split(':')[1] if ':' in k else ''} "
        f"{100 * sum(r.correct for r in v) / len(v):.0f}%"
        for k, v in by.items()
    ]
    tokens = sum(r.completion_tokens for r in records)
    rate = tokens / max(time.perf_counter() - started, 1e-6)
    errors = sum(r.error is not None for r in records)
    tail = f" · {errors} errors" if errors else ""
    return " · ".join(parts) + f" · {rate:.0f} tok/s{tail}"


def print_summary(summaries: list[StrategySummary], title: str) -> None:
    table = Table(title=title)
    columns = (
        "strategy",
        "problems",
        "accuracy",
        "coverage",
        "gens",
        "prompt tok",
        "compl. tok",
        "verifier",
        "wall s",
        "tok/s",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for s in summaries:
        table.add_row(
            s.strategy,
            f"{s.problems}" + (f" (+{s.errors} err)" if s.errors else ""),
            f"{100 * s.accuracy:.1f}%",
            f"{100 * s.coverage:.1f}%",
            f"{s.mean_generations:.1f}",
            f"{s.mean_prompt_tokens:.0f}",
            f"{s.mean_completion_tokens:.0f}",
            f"{s.mean_verifier_calls:.1f}",
            f"{s.total_wall_time_s:.1f}",
            f"{s.tokens_per_s:.0f}",
        )
    out = console if console.is_terminal else Console(width=_WIDE)
    out.print(table)
    out.print(
        "[dim]accuracy: chosen answer correct · coverage: any candidate correct "
        "(pass@k) · gens/tokens/verifier: means per problem · wall s: summed "
        "per-problem time (problems overlap)[/]"
    )


def bench_command(
    dataset: Annotated[
        str,
        typer.Option(
            help="arithmetic, instructions, gsm8k, math500, humaneval, game24, or a path.jsonl"
        ),
    ] = "arithmetic",
    strategy: Annotated[
        list[str] | None,
        typer.Option(
            "--strategy", "-s", help="Repeat for several, e.g. -s single -s best-of-n:n=8"
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="First N problems.")] = None,
    verifier: Annotated[
        str,
        typer.Option(
            help="Selection verifier the strategies may use: 'auto' (the dataset's own, without "
            "the reference), 'none', or a verifier spec."
        ),
    ] = "auto",
    seed: Annotated[int, typer.Option(help="Seed for sampling and procedural datasets.")] = 0,
    concurrency: Annotated[int, typer.Option(min=1, help="Problems run at once.")] = 4,
    out: Annotated[Path | None, typer.Option(help="JSONL results (resumed if it exists).")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the scaling plot (PNG).")] = None,
    model: Annotated[Path | None, typer.Option(help="A GGUF model (default: bundled).")] = None,
    worker: Annotated[str | None, typer.Option(help="Worker spec instead of --model.")] = None,
    workers: Annotated[
        Path | None, typer.Option("--workers", help="Cluster file (YAML): pools of Ray actors.")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Run on this Ray cluster ('auto': this machine's).")
    ] = None,
    temperature: Annotated[float, typer.Option(min=0.0, max=5.0)] = 0.7,
    max_tokens: Annotated[int, typer.Option(min=1)] = 256,
    difficulty: Annotated[int | None, typer.Option(min=1, max=3, help="Procedural sets.")] = None,
    field: Annotated[str, typer.Option(help="Question field of a custom JSONL.")] = "question",
    answer_field: Annotated[str, typer.Option(help="Answer field of a custom JSONL.")] = "answer",
    grader: Annotated[str | None, typer.Option(help="Grader for a custom JSONL.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Evaluate strategies on a dataset: accuracy, coverage and compute, resumable."""
    from threadloom.strategies.registry import make_strategy
    from threadloom.workers.registry import make_worker

    try:
        strategies = [make_strategy(s) for s in (strategy or ["single"])]
        labels = [s.label() for s in strategies]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"the same strategy is listed twice: {labels}")
        name, problems = _load_problems(
            dataset,
            limit=limit,
            seed=seed,
            field=field,
            answer_field=answer_field,
            grader=grader,
            difficulty=difficulty,
        )
        params = SamplingParams(temperature=temperature, max_tokens=max_tokens)
    except (ThreadloomError, ValueError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    log = ResultLog(out or Path("runs") / f"bench-{name}.jsonl")
    todo = pending_count(problems, strategies, log, name, seed)
    total = len(problems) * len(strategies)
    if todo < total:
        err_console.print(f"resuming {log.path}: {total - todo} of {total} already done")
    verifiers = Verifiers(selection=verifier)
    started = time.perf_counter()
    finished: list[BenchRecord] = []
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=err_console,
    )
    task = progress.add_task(name, total=todo, status="")

    def on_record(record: BenchRecord) -> None:
        finished.append(record)
        progress.update(task, advance=1, status=_status(finished, started))

    async def go() -> None:
        spec = worker or (f"llamacpp:{model}" if model else None)
        if workers is not None or ray_address is not None:
            from threadloom.cluster_command import cluster_worker

            # a pool waits while its actors are full, so --concurrency can exceed their slots
            backend = cluster_worker(workers, ray_address, spec)
        else:
            backend = make_worker(spec)
        try:
            await run_bench(
                problems,
                strategies,
                backend,
                log,
                dataset=name,
                verifiers=verifiers,
                params=params,
                seed=seed,
                concurrency=concurrency,
                on_record=on_record,
            )
        finally:
            await backend.close()
            verifiers.close()

    interrupted = False
    try:
        if todo:
            with progress:
                asyncio.run(go())
    except KeyboardInterrupt:
        interrupted = True
    except ThreadloomError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    wanted = set(labels)
    ids = {p.id for p in problems}
    records = [
        r for r in log.read() if r.strategy in wanted and r.problem_id in ids and r.dataset == name
    ]
    summaries = sorted(summarize(records), key=lambda s: labels.index(s.strategy))
    if plot is not None and summaries:
        from threadloom.evaluation.plot import plot_scaling

        plot_scaling(summaries, plot, title=f"{name}, {len(problems)} problems")
    if as_json:
        payload = {
            "dataset": name,
            "problems": len(problems),
            "results": str(log.path),
            "interrupted": interrupted,
            "strategies": [s.model_dump() for s in summaries],
        }
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    else:
        print_summary(summaries, f"{name}: {len(problems)} problems · results in {log.path}")
        if plot is not None and summaries:
            console.print(f"plot written to {plot}")
    if interrupted:
        err_console.print("[yellow]interrupted: finished problems are saved; rerun to resume[/]")
        raise typer.Exit(130)
