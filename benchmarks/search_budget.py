"""Step-wise search against Best-of-N at three budgets, with the self-judge PRM.

Every strategy runs on the same seeded arithmetic problems on the embedded model; its candidates
are ranked by the model judging its own steps (`self-judge`). Prints, per strategy and budget:
selection accuracy, coverage (any candidate correct: what a perfect verifier would get),
generator tokens, PRM passes and wall time per problem, and writes a PNG of accuracy against
generator tokens and against PRM passes.

    python benchmarks/search_budget.py [--limit 30] [--plot docs/search-budget.png]

Results go to a JSONL log as problems finish; rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from rich.console import Console
from rich.table import Table

import threadloom as tl
from threadloom import data
from threadloom.evaluation.bench import Verifiers, run_bench
from threadloom.evaluation.records import ResultLog
from threadloom.evaluation.summary import StrategySummary, summarize
from threadloom.strategies.registry import make_strategy
from threadloom.workers.llamacpp.worker import LlamaCppWorker

STEP = "step_tokens=48,max_steps=4"
BUDGETS: dict[str, list[str]] = {
    "best-of-n": ["best-of-n:n=2", "best-of-n:n=4", "best-of-n:n=8"],
    "beam-search": [f"beam-search:width=1,expansions=2,{STEP}",
                    f"beam-search:width=2,expansions=2,{STEP}",
                    f"beam-search:width=4,expansions=2,{STEP}"],
    "a-star": [f"a-star:k=2,max_expansions=2,{STEP}", f"a-star:k=2,max_expansions=4,{STEP}",
               f"a-star:k=4,max_expansions=6,{STEP}"],
    "particle-filtering": [f"particle-filtering:n=2,{STEP}", f"particle-filtering:n=4,{STEP}",
                           f"particle-filtering:n=8,{STEP}"],
}


def short(label: str) -> str:
    """The label without the step settings every search shares."""
    kind, _, options = label.partition(":")
    shared = ("step_tokens", "max_steps")
    kept = [o for o in options.split(",") if o and o.split("=")[0] not in shared]
    return f"{kind}:{','.join(kept)}" if kept else kind


def plot(summaries: list[StrategySummary], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, field, label in ((axes[0], "mean_completion_tokens", "generator tokens / problem"),
                               (axes[1], "mean_verifier_calls", "PRM passes / problem")):
        for kind in BUDGETS:
            group = [s for s in summaries if s.strategy.startswith(kind + ":")]
            group.sort(key=lambda s: getattr(s, field))
            xs = [getattr(s, field) for s in group]
            (line,) = axis.plot(xs, [100 * s.accuracy for s in group], marker="o",
                                label=f"{kind} accuracy")
            axis.plot(xs, [100 * s.coverage for s in group], marker="x", linestyle=":",
                      color=line.get_color(), alpha=0.6, label=f"{kind} coverage")
        axis.set_xlabel(label)
        axis.set_ylabel("% of problems")
        axis.set_ylim(-2, 102)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--difficulty", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--log", type=Path, default=Path("runs/search_budget.jsonl"))
    parser.add_argument("--plot", type=Path, default=Path("runs/search_budget.png"))
    args = parser.parse_args()

    problems = data.load("arithmetic", limit=args.limit, difficulty=args.difficulty)
    strategies = [make_strategy(spec) for specs in BUDGETS.values() for spec in specs]
    worker = LlamaCppWorker(n_ctx=32 * 1024, n_slots=32)
    verifiers = Verifiers(selection="self-judge")  # Best-of-N picks with the same judge
    log = ResultLog(args.log)
    console = Console(width=160)
    done = 0

    def progress(record: object) -> None:
        nonlocal done
        done += 1
        if done % 10 == 0:
            console.print(f"{done} runs finished")

    try:
        await run_bench(problems, strategies, worker, log, dataset="arithmetic",
                        verifiers=verifiers, concurrency=args.concurrency, on_record=progress,
                        params=tl.SamplingParams(temperature=0.8, max_tokens=args.max_tokens),
                        dataset_options={"difficulty": args.difficulty})
    finally:
        await worker.close()
        verifiers.close()

    labels = [s.label() for s in strategies]
    summaries = [s for s in summarize(log.read()) if s.strategy in labels]
    summaries.sort(key=lambda s: labels.index(s.strategy))
    table = Table(title=f"Search at three budgets, {len(problems)} arithmetic problems, "
                        "self-judge PRM on SmolLM2-135M")
    for column in ("strategy", "accuracy", "coverage", "gen tokens", "PRM passes",
                   "generations", "wall s", "acc / 1k tokens"):
        table.add_column(column, justify="right")
    for s in summaries:
        per_k = 1000 * s.accuracy / s.mean_completion_tokens if s.mean_completion_tokens else 0.0
        table.add_row(short(s.strategy), f"{100 * s.accuracy:.0f}%",
                      f"{100 * s.coverage:.0f}%", f"{s.mean_completion_tokens:.0f}",
                      f"{s.mean_verifier_calls:.1f}", f"{s.mean_generations:.1f}",
                      f"{s.mean_wall_time_s:.1f}", f"{per_k:.2f}")
    console.print(table)
    plot(summaries, args.plot, f"arithmetic (n={len(problems)}), self-judge PRM, SmolLM2-135M")
    console.print(f"plot: {args.plot}   log: {args.log}")


if __name__ == "__main__":
    asyncio.run(main())
