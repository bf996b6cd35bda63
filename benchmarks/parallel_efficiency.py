"""Best-of-N on the embedded llama.cpp worker beside the raw batched decode of the same requests.

For N in {1, 4, 8, 16}, in one run, each repeat decodes N samples twice, in turn: once as a bare
`asyncio.gather` of the worker's own `generate` calls (the raw batched decode rate: the N
sequences share every forward pass of one llama.cpp context) and once as a threadloom
best-of-n run with the same sampling parameters. Prints the wall time and aggregate completion
tokens per second of both, threadloom's share of the raw rate, and the speed-up of N samples
over one stream.

    python benchmarks/parallel_efficiency.py [--max-tokens 128] [--repeats 2] [--sizes 1 4 8 16]

`--worker SPEC` measures another worker (e.g. a GGUF path, or 'fake' to check the script
itself without a model).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

import threadloom as tl
from threadloom.types import ChatMessage, GenerationRequest
from threadloom.workers.base import Worker
from threadloom.workers.registry import make_worker

PROMPT = "Write a short story about a robot who learns to paint."


@dataclass
class Measured:
    """Wall seconds and completion tokens of one batch of N samples."""

    wall: float
    tokens: int

    @property
    def rate(self) -> float:
        return self.tokens / self.wall


def sampling(max_tokens: int) -> tl.SamplingParams:
    # best-of-n asks for log-probabilities, so the raw requests do too
    return tl.SamplingParams(temperature=0.8, max_tokens=max_tokens, logprobs=0)


async def raw(worker: Worker, n: int, max_tokens: int, seed: int) -> Measured:
    messages = (ChatMessage(role="user", content=PROMPT),)
    params = sampling(max_tokens)
    requests = [
        GenerationRequest(
            messages=messages, params=params.model_copy(update={"seed": seed * 1000 + i})
        )
        for i in range(n)
    ]
    started = time.perf_counter()
    completions = await asyncio.gather(*(worker.generate(r) for r in requests))
    wall = time.perf_counter() - started
    return Measured(wall, sum(c.usage.completion_tokens for c in completions))


async def orchestrated(worker: Worker, n: int, max_tokens: int, seed: int) -> Measured:
    params = sampling(max_tokens)
    started = time.perf_counter()
    result = await tl.arun(PROMPT, "best-of-n", n=n, worker=worker, params=params, seed=seed)
    return Measured(time.perf_counter() - started, result.usage.completion_tokens)


def median(runs: list[Measured]) -> tuple[float, float, float]:
    """Median wall seconds, completion tokens and tokens per second."""
    return (
        statistics.median(m.wall for m in runs),
        statistics.median(m.tokens for m in runs),
        statistics.median(m.rate for m in runs),
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--worker", default=None, help="worker spec (default: bundled model)")
    args = parser.parse_args()

    worker = make_worker(args.worker)
    await orchestrated(worker, 2, 16, seed=0)  # warm-up: page in the weights
    rows = []
    for n in args.sizes:
        bare_runs: list[Measured] = []
        runs: list[Measured] = []
        for repeat in range(args.repeats):
            # alternate which goes first, so that neither always meets a warmer machine
            if repeat % 2 == 0:
                bare_runs.append(await raw(worker, n, args.max_tokens, seed=repeat + 1))
                runs.append(await orchestrated(worker, n, args.max_tokens, seed=repeat + 1))
            else:
                runs.append(await orchestrated(worker, n, args.max_tokens, seed=repeat + 1))
                bare_runs.append(await raw(worker, n, args.max_tokens, seed=repeat + 1))
        rows.append((n, median(bare_runs), median(runs)))
    await worker.close()

    one_stream = rows[0][1][2]
    table = Table(title=f"Best-of-N on {worker.capabilities.model} (max_tokens={args.max_tokens})")
    columns = (
        "N",
        "raw wall s",
        "raw tok/s",
        "threadloom wall s",
        "threadloom tokens",
        "threadloom tok/s",
        "threadloom / raw",
        "raw / 1 stream",
    )
    for column in columns:
        table.add_column(column, justify="right")
    for n, (raw_wall, _, raw_rate), (wall, tokens, rate) in rows:
        table.add_row(
            str(n),
            f"{raw_wall:.2f}",
            f"{raw_rate:.1f}",
            f"{wall:.2f}",
            f"{tokens:.0f}",
            f"{rate:.1f}",
            f"{rate / raw_rate:.0%}",
            f"{raw_rate / one_stream:.2f}x",
        )
    Console(width=150).print(table)


if __name__ == "__main__":
    asyncio.run(main())
