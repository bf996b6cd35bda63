"""Best-of-N on the embedded llama.cpp worker: N in {1, 4, 8, 16}, all in one run.

Prints wall time, aggregate completion tokens per second, and the ratio of each N's aggregate
throughput to one stream's. The N samples share every forward pass of one llama.cpp context,
so the ratio is the speed-up over decoding the same samples one after another.

    python benchmarks/parallel_efficiency.py [--max-tokens 128] [--repeats 2]
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

PROMPT = "Write a short story about a robot who learns to paint."


async def measure(worker: LlamaCppWorker, n: int, max_tokens: int, seed: int) -> tuple[float, int]:
    params = tl.SamplingParams(temperature=0.8, max_tokens=max_tokens)
    started = time.perf_counter()
    result = await tl.arun(PROMPT, "best-of-n", n=n, worker=worker, params=params, seed=seed)
    return time.perf_counter() - started, result.usage.completion_tokens


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    args = parser.parse_args()

    worker = LlamaCppWorker()
    await measure(worker, 2, 16, seed=0)  # warm-up: page in the weights
    rows = []
    for n in args.sizes:
        runs = [await measure(worker, n, args.max_tokens, seed=r) for r in range(args.repeats)]
        wall = statistics.median(w for w, _ in runs)
        rate = statistics.median(t / w for w, t in runs)
        tokens = statistics.median(t for _, t in runs)
        rows.append((n, wall, tokens, rate))
    await worker.close()

    base = rows[0][3]
    table = Table(title=f"Best-of-N on {worker.capabilities.model} (max_tokens={args.max_tokens})")
    for column in ("N", "wall s", "completion tokens", "aggregate tok/s", "ratio to 1 stream"):
        table.add_column(column, justify="right")
    for n, wall, tokens, rate in rows:
        table.add_row(str(n), f"{wall:.2f}", f"{tokens:.0f}", f"{rate:.1f}", f"{rate / base:.2f}x")
    Console(width=150).print(table)


if __name__ == "__main__":
    asyncio.run(main())
