"""First-Finish search: FFS(n) vs one sample vs waiting for all n, side by side.

On the embedded worker, for a few questions: wall time of one sample, of Best-of-n (waits for
all n) and of First-Finish (n launched, the first to finish wins, the rest aborted), plus the
tokens the losers decoded after the winner finished.

    python benchmarks/first_finish.py [--n 8] [--max-tokens 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from rich.console import Console
from rich.table import Table

import threadloom as tl
from threadloom.workers.llamacpp.worker import LlamaCppWorker

QUESTIONS = [
    "What is 17 + 25? Explain briefly.",
    "Name a planet and say one fact about it.",
    "What is the capital of Japan?",
    "Why is the sky blue?",
    "Give a synonym for happy.",
]


async def run(
    worker: LlamaCppWorker, question: str, strategy: str, n: int, max_tokens: int, seed: int
) -> tuple[float, tl.Result]:
    started = time.perf_counter()
    options = {} if strategy == "single" else {"n": n}
    result = await tl.arun(
        question,
        strategy,
        worker=worker,
        seed=seed,
        params=tl.SamplingParams(max_tokens=max_tokens),
        **options,
    )
    return time.perf_counter() - started, result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=200)
    args = parser.parse_args()
    worker = LlamaCppWorker()
    await run(worker, "Warm up.", "single", 1, 8, 0)
    table = Table(title=f"First-Finish (n={args.n}) vs one sample vs all {args.n}")
    for column in (
        "question",
        "1 sample s",
        f"all {args.n} s",
        "FFS s",
        "FFS / all",
        "FFS / 1",
        "tokens after winner",
        "aborted",
    ):
        table.add_column(column, justify="left" if column == "question" else "right")
    ratios_all, ratios_one, after = [], [], []
    for i, question in enumerate(QUESTIONS):
        one_s, _ = await run(worker, question, "single", 1, args.max_tokens, i)
        all_s, _ = await run(worker, question, "best-of-n", args.n, args.max_tokens, i)
        ffs_s, ffs = await run(worker, question, "first-finish", args.n, args.max_tokens, i)
        meta = ffs.best.metadata if ffs.best else {}
        ratios_all.append(ffs_s / all_s)
        ratios_one.append(ffs_s / one_s)
        after.append(meta.get("tokens_after_decision", 0))
        table.add_row(
            question[:36],
            f"{one_s:.2f}",
            f"{all_s:.2f}",
            f"{ffs_s:.2f}",
            f"{ffs_s / all_s:.2f}",
            f"{ffs_s / one_s:.2f}",
            str(meta.get("tokens_after_decision", "-")),
            str(meta.get("aborted", "-")),
        )
    await worker.close()
    table.add_row(
        "[bold]median[/]",
        "",
        "",
        "",
        f"{statistics.median(ratios_all):.2f}",
        f"{statistics.median(ratios_one):.2f}",
        f"{statistics.median(after):.0f}",
        "",
    )
    Console(width=150).print(table)


if __name__ == "__main__":
    asyncio.run(main())
