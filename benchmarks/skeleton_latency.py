"""Skeleton-of-Thought vs direct answering: wall time and answer length, side by side.

Ten multi-point questions, the same embedded worker for both; the direct answer gets the same
token allowance as the skeleton plus all its points. Prints each question's times, the speed-up
ratio and the answer lengths.

    python benchmarks/skeleton_latency.py [--point-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from rich.console import Console
from rich.table import Table

import threadloom as tl
from threadloom.strategies.skeleton import SkeletonOfThought
from threadloom.workers.llamacpp.worker import LlamaCppWorker

QUESTIONS = [
    "Give tips for better sleep.",
    "What are the benefits of regular exercise?",
    "How can I improve my writing skills?",
    "How do I prepare for a job interview?",
    "What should I pack for a camping trip?",
    "How can a small team communicate better?",
    "What are good habits for saving money?",
    "How do I start learning to program?",
    "How can I reduce stress at work?",
    "What makes a good presentation?",
]


async def timed(
    worker: LlamaCppWorker,
    question: str,
    strategy: tl.Strategy | str,
    params: tl.SamplingParams,
    seed: int,
) -> tuple[float, tl.Result]:
    started = time.perf_counter()
    result = await tl.arun(question, strategy, worker=worker, params=params, seed=seed)
    return time.perf_counter() - started, result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--point-tokens", type=int, default=64)
    parser.add_argument("--max-points", type=int, default=5)
    parser.add_argument("--skeleton-tokens", type=int, default=64)
    args = parser.parse_args()
    allowance = args.skeleton_tokens + args.max_points * args.point_tokens
    sot = SkeletonOfThought(
        max_points=args.max_points,
        point_tokens=args.point_tokens,
        skeleton_tokens=args.skeleton_tokens,
    )
    worker = LlamaCppWorker()
    await timed(worker, "Warm up.", "single", tl.SamplingParams(max_tokens=8), 0)
    table = Table(title=f"Skeleton-of-Thought vs direct (direct max_tokens={allowance})")
    for column in ("question", "direct s", "SoT s", "speed-up", "direct tok", "SoT tok", "points"):
        table.add_column(column, justify="left" if column == "question" else "right")
    ratios, direct_tokens, sot_tokens = [], [], []
    for i, question in enumerate(QUESTIONS):
        d_time, direct = await timed(
            worker, question, "single", tl.SamplingParams(max_tokens=allowance), i
        )
        s_time, skeleton = await timed(worker, question, sot, tl.SamplingParams(), i)
        best = skeleton.best
        points = len(best.steps) if best and best.metadata.get("mode") == "skeleton" else 0
        ratios.append(d_time / s_time)
        direct_tokens.append(direct.usage.completion_tokens)
        sot_tokens.append(skeleton.usage.completion_tokens)
        table.add_row(
            question[:40],
            f"{d_time:.2f}",
            f"{s_time:.2f}",
            f"{d_time / s_time:.2f}x",
            str(direct.usage.completion_tokens),
            str(skeleton.usage.completion_tokens),
            str(points) if points else "direct",
        )
    await worker.close()
    table.add_row(
        "[bold]median[/]",
        "",
        "",
        f"[bold]{statistics.median(ratios):.2f}x[/]",
        f"{statistics.median(direct_tokens):.0f}",
        f"{statistics.median(sot_tokens):.0f}",
        "",
    )
    Console(width=150).print(table)
    Console(width=150).print(
        "[dim]speed-up = direct wall time / SoT wall time (same worker, one run)."
        " Token counts differ: compare the answer lengths too.[/]"
    )


if __name__ == "__main__":
    asyncio.run(main())
