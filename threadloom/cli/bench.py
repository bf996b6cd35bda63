"""`threadloom bench`: the evaluation harness on the command line."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from threadloom.cli.bench_report import print_difficulty, print_summary, status_line
from threadloom.cli.compare import compare_command
from threadloom.cli.config_file import config_option
from threadloom.cli.console import console, err_console, fail
from threadloom.cli.options import (
    ClusterOption,
    LogLevelOption,
    OldClusterOption,
    renamed,
    worker_spec,
)
from threadloom.errors import ConfigError, ThreadloomError
from threadloom.evaluation.allocation import BatchBudget, run_budget_bench
from threadloom.evaluation.bench import Verifiers, pending_count, record_key, run_bench
from threadloom.evaluation.difficulty import by_difficulty
from threadloom.evaluation.fingerprint import (
    RunFingerprint,
    describe_worker_spec,
    file_sha256,
    make_fingerprint,
)
from threadloom.evaluation.records import BenchRecord, ResultLog, separate_set_path
from threadloom.evaluation.sanitize import scrub_text
from threadloom.evaluation.summary import summarize
from threadloom.exit_codes import INTERRUPTED, exit_code_for
from threadloom.types import Problem, SamplingParams

bench_app = typer.Typer(
    help="Evaluate strategies on a dataset, and compare the results of two runs.",
    add_completion=False,
)
bench_app.command("compare")(compare_command)


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
    if _is_source(dataset):  # hf:NAME[:CONFIG]:SPLIT, or a Parquet/Arrow/... file or folder
        mapping = data.SourceOptions(
            field=None if field == "question" else field,  # None: a known set's own columns
            answer_field=None if answer_field == "answer" else answer_field,
            verifier=grader,
        )
        loaded = data.open_source(dataset, mapping, limit=limit)
        return loaded.name, loaded.problems
    options: dict[str, Any] = {"difficulty": difficulty} if difficulty is not None else {}
    return dataset, data.load(dataset, limit=limit, seed=seed, **options)


def _is_source(dataset: str) -> bool:
    from threadloom import data

    named = {info.name for info in data.list_datasets()}
    return dataset.strip().lower() not in named and data.is_source(dataset)


def _dataset_options(
    dataset: str,
    *,
    seed: int,
    difficulty: int | None,
    field: str,
    answer_field: str,
    grader: str | None,
    problems: list[Problem],
) -> dict[str, Any]:
    """What decides a dataset's problems, for the fingerprint (a custom file: its hash)."""
    if not dataset.endswith(".jsonl") and _is_source(dataset):
        from threadloom.data import problems_digest

        return {"seed": seed, "source": dataset.strip(), "problems": problems_digest(problems)}
    if dataset.endswith(".jsonl"):
        return {
            "seed": seed,
            "file": file_sha256(Path(dataset)),
            "field": field,
            "answer_field": answer_field,
            "grader": grader,
        }
    return {"seed": seed, "difficulty": difficulty}


def _open_log(
    stack: ExitStack, path: Path, fingerprint: RunFingerprint, *, new_set: bool
) -> ResultLog:
    """The locked log this run writes: `path`, or with --new-set its own set beside it when
    `path` holds another configuration's results."""
    log = ResultLog(path)
    stack.enter_context(log.lock())
    try:
        log.check_fingerprint(fingerprint)
    except ConfigError:
        if not new_set:
            raise
        stack.close()
        log = ResultLog(separate_set_path(path, fingerprint))
        stack.enter_context(log.lock())
        log.check_fingerprint(fingerprint)
        err_console.print(
            Text(f"{path} holds another configuration's results; this run uses {log.path}")
        )
    return log


@bench_app.callback(invoke_without_command=True)
def bench_command(
    ctx: typer.Context,
    dataset: Annotated[
        str,
        typer.Option(
            help="arithmetic, instructions, gsm8k, math500, humaneval, game24, "
            "hf:NAME[:CONFIG]:SPLIT (a Hub dataset), or a .jsonl/.parquet/.arrow/.json/.csv file "
            "or save_to_disk folder"
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
    sandbox: Annotated[
        str | None,
        typer.Option(help="Isolation of code graders: bwrap (default), or guards (weaker)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for sampling and procedural datasets.")] = 0,
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Problems run at once (default: the worker's batch slots, at least 4); their "
            "samples share the slots first come first served.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="JSONL results, resumed if it exists and was written with the same settings."
        ),
    ] = None,
    new_set: Annotated[
        bool,
        typer.Option(
            "--new-set",
            help="When --out holds results of other settings (model, sampling, verifier, "
            "dataset options, version), write this run beside it, named by its fingerprint, "
            "instead of refusing.",
        ),
    ] = False,
    plot: Annotated[Path | None, typer.Option(help="Write the scaling plot (PNG).")] = None,
    model: Annotated[Path | None, typer.Option(help="A GGUF model (default: bundled).")] = None,
    worker: Annotated[
        str | None,
        typer.Option(help="Worker spec instead of --model (default: $THREADLOOM_WORKER)."),
    ] = None,
    cluster: ClusterOption = None,
    old_cluster: OldClusterOption = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Run on this Ray cluster ('auto': this machine's).")
    ] = None,
    temperature: Annotated[float, typer.Option(min=0.0, max=5.0)] = 0.7,
    max_tokens: Annotated[int, typer.Option(min=1)] = 256,
    difficulty: Annotated[int | None, typer.Option(min=1, max=3, help="Procedural sets.")] = None,
    field: Annotated[str, typer.Option(help="Question field of your data.")] = "question",
    answer_field: Annotated[str, typer.Option(help="Answer field of your data.")] = "answer",
    grader: Annotated[str | None, typer.Option(help="Grader of your data.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    budget_tokens: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Share this many completion tokens over all problems: a few probe samples "
            "each, then more to the problems whose votes are still split (batch-budget mode; "
            "runs besides any -s strategies).",
        ),
    ] = None,
    config: Annotated[Path | None, config_option()] = None,
    log_level: LogLevelOption = None,
) -> None:
    """Evaluate strategies on a dataset: accuracy, coverage and compute, resumable."""
    if ctx.invoked_subcommand is not None:
        return
    from threadloom.strategies.registry import make_strategy

    workers = renamed(cluster, old_cluster, new_flag="--cluster", old_flag="--workers")
    spec = worker_spec(worker, model)
    stack = ExitStack()
    try:
        for option, path in (("--out", out), ("--plot", plot)):
            if path is not None and path.is_dir():
                raise ConfigError(
                    f"{option} {path} is a directory; name a file inside it, "
                    f"e.g. {path / ('results.jsonl' if option == '--out' else 'scaling.png')}"
                )
        if plot is not None:
            from threadloom.evaluation.plot import pyplot

            pyplot()  # without the plots extra, refuse before the run rather than after it
        default = [] if budget_tokens is not None else ["single"]
        strategies = [make_strategy(s) for s in (strategy or default)]
        budget = BatchBudget(budget_tokens=budget_tokens) if budget_tokens is not None else None
        labels = [s.label() for s in strategies] + ([budget.label()] if budget else [])
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
        fingerprint = make_fingerprint(
            worker=describe_worker_spec(spec, workers_file=workers, ray_address=ray_address),
            params=params,
            verifier=verifier,
            dataset=_dataset_options(
                dataset,
                seed=seed,
                difficulty=difficulty,
                field=field,
                answer_field=answer_field,
                grader=grader,
                problems=problems,
            ),
        )
        path = out or Path("runs") / f"bench-{name}.jsonl"
        log = _open_log(stack, path, fingerprint, new_set=new_set)
    except (ThreadloomError, ValueError) as exc:
        stack.close()
        raise fail(str(exc)) from None
    with stack:
        _run_and_report(
            log,
            problems,
            strategies,
            labels,
            name=name,
            spec=spec,
            workers=workers,
            ray_address=ray_address,
            verifier=verifier,
            sandbox=sandbox,
            params=params,
            seed=seed,
            concurrency=concurrency,
            fingerprint=fingerprint,
            plot=plot,
            as_json=as_json,
            budget=budget,
        )


def _run_and_report(
    log: ResultLog,
    problems: list[Problem],
    strategies: list[Any],
    labels: list[str],
    *,
    name: str,
    spec: str | None,
    workers: Path | None,
    ray_address: str | None,
    verifier: str,
    sandbox: str | None,
    params: SamplingParams,
    seed: int,
    concurrency: int | None,
    fingerprint: RunFingerprint,
    plot: Path | None,
    as_json: bool,
    budget: BatchBudget | None = None,
) -> None:
    from threadloom.workers.registry import make_worker

    todo = pending_count(problems, strategies, log, name, seed)
    total = len(problems) * len(strategies)
    if budget is not None:
        done = log.done_keys()
        todo += sum(record_key(name, p, budget.label(), seed) not in done for p in problems)
        total += len(problems)
    if todo < total:
        err_console.print(Text(f"resuming {log.path}: {total - todo} of {total} already done"))
    verifiers = Verifiers(selection=verifier, sandbox=sandbox)
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
    task = progress.add_task(escape(name), total=todo, status="")

    def on_record(record: BenchRecord) -> None:
        finished.append(record)
        progress.update(task, advance=1, status=status_line(finished, started))

    async def go() -> None:
        if workers is not None or ray_address is not None:
            from threadloom.cli.cluster import cluster_worker

            # a pool waits while its actors are full, so --concurrency can exceed their slots
            backend = cluster_worker(workers, ray_address, spec)
        else:
            backend = make_worker(spec)
        try:
            if strategies:
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
                    fingerprint=fingerprint,
                )
            if budget is not None:
                await run_budget_bench(
                    problems,
                    backend,
                    log,
                    budget,
                    dataset=name,
                    verifiers=verifiers,
                    fingerprint=fingerprint,
                    params=params,
                    seed=seed,
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
        # 2 for a configuration the run found wrong, 3 for a failure at run time
        raise fail(str(exc), exit_code_for(exc)) from None
    wanted = {record_key(name, p, label, seed) for p in problems for label in labels}
    records = [r for r in log.read() if r.key() in wanted and r.fingerprint == fingerprint]
    order = [scrub_text(label) for label in labels]
    summaries = sorted(summarize(records), key=lambda s: order.index(s.strategy))
    if plot is not None and summaries:
        from threadloom.evaluation.plot import plot_scaling

        plot_scaling(summaries, plot, title=f"{name}, {len(problems)} problems")
    if as_json:
        payload = {
            "dataset": name,
            "problems": len(problems),
            "results": str(log.path),
            "fingerprint": fingerprint.digest(),
            "interrupted": interrupted,
            "strategies": [s.model_dump() for s in summaries],
            "by_difficulty": [row.model_dump() for row in by_difficulty(records)],
        }
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    else:
        print_summary(summaries, f"{name}: {len(problems)} problems · results in {log.path}")
        print_difficulty(by_difficulty(records))
        if plot is not None and summaries:
            console.print(Text(f"plot written to {plot}"))
    if interrupted:
        err_console.print("[yellow]interrupted: finished problems are saved; rerun to resume[/]")
        raise typer.Exit(INTERRUPTED)
