"""Adaptive compute on the bundled arithmetic set: accuracy, coverage and tokens per strategy.

Runs, on the embedded SmolLM2-135M worker, self-consistency n=8, adaptive self-consistency
(max 8 and max 16), confidence-weighted and confidence-filtered voting (8 samples), and the
batch-budget mode given the same total completion tokens as self-consistency n=8 spent on the
same problems. Problems go in chunks, every strategy on a chunk before the next chunk, so an
interrupted run has results for all strategies on the same problems; everything is appended to
one JSONL log and a rerun resumes where it stopped.

Prints a table with Wilson 95% intervals and writes the accuracy-against-tokens plot.

    python benchmarks/adaptive_compute.py [--problems 100] [--seed 17] [--chunk 5]
        [--out runs/adaptive-compute.jsonl] [--plot docs/adaptive-compute.png]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from threadloom.data import load
from threadloom.evaluation.allocation import BatchBudget, run_budget_bench
from threadloom.evaluation.bench import Verifiers, record_key, run_bench
from threadloom.evaluation.difficulty import by_difficulty
from threadloom.evaluation.fingerprint import describe_worker, make_fingerprint
from threadloom.evaluation.plot import plot_scaling
from threadloom.evaluation.records import BenchRecord, ResultLog
from threadloom.evaluation.summary import summarize
from threadloom.strategies.registry import make_strategy
from threadloom.types import Problem, SamplingParams
from threadloom.workers.llamacpp.worker import LlamaCppWorker

STRATEGIES = (
    "self-consistency:n=8",
    "adaptive-consistency:max_n=8,wave=4",
    "adaptive-consistency:max_n=16,wave=4",
    "confidence-vote:n=8",
    "confidence-vote:n=8,select=filtered,keep=0.5",
)
BASELINE = "self-consistency:n=8"
DATASET = "arithmetic"


def baseline_tokens(records: list[BenchRecord], chunk: list[Problem], seed: int) -> int | None:
    """The completion tokens self-consistency n=8 spent on this chunk (None until all done)."""
    keys = {record_key(DATASET, p, BASELINE, seed) for p in chunk}
    spent = [r for r in records if r.key() in keys and r.error is None]
    if len(spent) < len(chunk):
        return None
    return sum(r.completion_tokens for r in spent)


async def timed(where: str, label: str, work: Awaitable[list[BenchRecord]]) -> None:
    began = time.perf_counter()
    if await work:
        print(f"{where} {label}: {time.perf_counter() - began:.0f} s", flush=True)


async def run(args: argparse.Namespace) -> None:
    problems = load(DATASET, limit=args.problems, seed=args.seed)
    params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens)
    worker = LlamaCppWorker()
    log = ResultLog(Path(args.out))
    verifiers = Verifiers(selection="none")
    fingerprint = make_fingerprint(
        worker=describe_worker(worker),
        params=params,
        verifier="none",
        dataset={"seed": args.seed, "difficulty": None},
    )
    strategies = [make_strategy(s) for s in STRATEGIES]
    try:
        for start in range(0, len(problems), args.chunk):
            chunk = problems[start : start + args.chunk]
            where = f"problems {start}-{start + len(chunk) - 1}"
            for strategy in strategies[:2]:
                await timed(where, strategy.label(), run_bench(
                    chunk, [strategy], worker, log, dataset=DATASET, verifiers=verifiers,
                    params=params, seed=args.seed, fingerprint=fingerprint))
            tokens = baseline_tokens(log.read(), chunk, args.seed)
            if tokens is not None:
                config = BatchBudget(budget_tokens=tokens)
                await timed(where, config.label(), run_budget_bench(
                    chunk, worker, log, config, dataset=DATASET, verifiers=verifiers,
                    fingerprint=fingerprint, params=params, seed=args.seed))
            for strategy in strategies[2:]:
                await timed(where, strategy.label(), run_bench(
                    chunk, [strategy], worker, log, dataset=DATASET, verifiers=verifiers,
                    params=params, seed=args.seed, fingerprint=fingerprint))
    finally:
        await worker.close()
    report(log.read(), args)


def report(records: list[BenchRecord], args: argparse.Namespace) -> None:
    # every chunk has its own budget label; report them together as one mode
    merged = [
        r.model_copy(update={"strategy": "batch-budget:same tokens as sc8"})
        if r.strategy.startswith("batch-budget")
        else r
        for r in records
    ]
    # compare on the problems every strategy finished (an interrupted chunk is left out)
    by_strategy: dict[str, set[str]] = {}
    for r in merged:
        if r.error is None:
            by_strategy.setdefault(r.strategy, set()).add(r.problem_id)
    common = set.intersection(*by_strategy.values()) if by_strategy else set()
    merged = [r for r in merged if r.problem_id in common]
    summaries = summarize(merged)
    table = Table(title=f"arithmetic seed {args.seed}, SmolLM2-135M, T={args.temperature}")
    for column in ("strategy", "problems", "accuracy (95% CI)", "coverage (95% CI)",
                   "gens", "compl. tok", "tok/s"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for s in summaries:
        table.add_row(
            s.strategy, str(s.problems),
            f"{100 * s.accuracy:.1f}% ({100 * s.accuracy_ci[0]:.0f}-{100 * s.accuracy_ci[1]:.0f})",
            f"{100 * s.coverage:.1f}% ({100 * s.coverage_ci[0]:.0f}-{100 * s.coverage_ci[1]:.0f})",
            f"{s.mean_generations:.1f}", f"{s.mean_completion_tokens:.0f}", f"{s.tokens_per_s:.0f}",
        )
    Console(width=160).print(table)
    rows = by_difficulty(merged)
    for row in rows:
        print(f"  {row.strategy} {row.difficulty}: {row.problems} problems, "
              f"{row.mean_samples:.1f} samples, {row.mean_completion_tokens:.0f} tokens, "
              f"accuracy {100 * row.accuracy:.0f}%")
    Path(args.summary).parent.mkdir(parents=True, exist_ok=True)
    Path(args.summary).write_text(json.dumps(
        {"strategies": [s.model_dump() for s in summaries],
         "by_difficulty": [r.model_dump() for r in rows]}, indent=2) + "\n")
    if summaries:
        problems = max(s.problems for s in summaries)
        plot_scaling(summaries, Path(args.plot),
                     title=f"arithmetic (seed {args.seed}), {problems} problems, SmolLM2-135M")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--chunk", type=int, default=5)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--out", default="runs/adaptive-compute.jsonl")
    parser.add_argument("--summary", default="runs/adaptive-compute.summary.json")
    parser.add_argument("--plot", default="docs/adaptive-compute.png")
    parser.add_argument("--report-only", action="store_true",
                        help="Print the table and write the plot from the log; run nothing.")
    args = parser.parse_args()
    if args.report_only:
        report(ResultLog(Path(args.out)).read(), args)
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
