"""Orchestrator overhead per generation on a zero-latency FakeWorker.

For each strategy, runs it many times and compares with a bare `asyncio.gather` of the same
number of worker calls, measured side by side in this run. Prints microseconds per generation
for both and their ratio.

    python benchmarks/orchestration_overhead.py [--n 8] [--runs 300]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from rich.console import Console
from rich.table import Table

import threadloom as tl
from threadloom.types import ChatMessage, GenerationRequest, SamplingParams


async def bare(worker: tl.FakeWorker, n: int, runs: int) -> float:
    messages = (ChatMessage(role="user", content="What is 17 + 25?"),)
    params = SamplingParams(logprobs=0)
    started = time.perf_counter()
    for _ in range(runs):
        await asyncio.gather(
            *(
                worker.generate(GenerationRequest(messages=messages, params=params))
                for _ in range(n)
            )
        )
    return time.perf_counter() - started


async def orchestrated(
    worker: tl.FakeWorker, strategy: str, n: int, runs: int, verifier: str | None
) -> float:
    options = {} if strategy == "single" else {"n": n}
    started = time.perf_counter()
    for _ in range(runs):
        await tl.arun("What is 17 + 25?", strategy, worker=worker, verifier=verifier, **options)
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    worker = tl.FakeWorker(["The answer is 42"])
    cases = [
        ("single", None, 1),
        ("best-of-n", None, args.n),
        ("best-of-n", "numeric", args.n),
        ("self-consistency", None, args.n),
    ]
    table = Table(title=f"orchestration overhead, zero-latency FakeWorker, {args.runs} runs each")
    for column in (
        "strategy",
        "verifier",
        "gens/run",
        "bare µs/gen",
        "threadloom µs/gen",
        "overhead µs/gen",
        "ratio",
    ):
        table.add_column(column, justify="right")
    await bare(worker, args.n, 20)  # warm-up
    for strategy, verifier, n in cases:
        await orchestrated(worker, strategy, n, 10, verifier)  # warm-up: imports, caches
        t_bare = await bare(worker, n, args.runs)
        t_run = await orchestrated(worker, strategy, n, args.runs, verifier)
        gens = n * args.runs
        per_bare, per_run = 1e6 * t_bare / gens, 1e6 * t_run / gens
        table.add_row(
            strategy,
            verifier or "-",
            str(n),
            f"{per_bare:.1f}",
            f"{per_run:.1f}",
            f"{per_run - per_bare:.1f}",
            f"{per_run / per_bare:.2f}x",
        )
    Console(width=150).print(table)


if __name__ == "__main__":
    asyncio.run(main())
