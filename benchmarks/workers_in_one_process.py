"""Does a llama.cpp worker slow down when other llama.cpp workers live in the same process?

A process may hold several embedded workers: a generator and a judge, a pool of two, a test
session. Each measurement decodes the same greedy single-stream requests on one worker, first
while it is the only worker in the process, then while `--others` more workers (each warmed up
by one request, then idle) are alive beside it, then alone again after they are closed.

llama.cpp's CPU backend uses OpenMP, and libgomp sleeps at barriers instead of spinning once the
threads of all teams in the process outnumber the CPUs; the engines therefore run every
forward pass on one shared thread. The ratio printed is with others over alone (1.00 is no
slowdown; it was about 0.33 with three workers when each engine decoded on its own thread).

    python benchmarks/workers_in_one_process.py [--others 2] [--max-tokens 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from rich.console import Console
from rich.table import Table

from threadloom.types import ChatMessage, GenerationRequest, SamplingParams
from threadloom.workers.llamacpp.worker import LlamaCppWorker

PROMPTS = (
    "Tell me a story about a lighthouse keeper.",
    "Explain how a bicycle stays upright.",
    "Describe a market on a rainy morning.",
)


def request(prompt: str, max_tokens: int) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage(role="user", content=prompt),),
        params=SamplingParams(temperature=0.0, max_tokens=max_tokens),
    )


async def rate(worker: LlamaCppWorker, max_tokens: int, repeats: int) -> float:
    """Median completion tok/s of single-stream requests, one after another."""
    rates = []
    for _ in range(repeats):
        for prompt in PROMPTS:
            started = time.perf_counter()
            done = await worker.generate(request(prompt, max_tokens))
            rates.append(done.usage.completion_tokens / (time.perf_counter() - started))
    return statistics.median(rates)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--others", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    worker = LlamaCppWorker(n_slots=4, speculation="off", worker_id="measured")
    await worker.generate(request("Hi", 8))  # page in the weights
    alone_before = await rate(worker, args.max_tokens, args.repeats)
    others = [
        LlamaCppWorker(n_slots=4, speculation="off", worker_id=f"other-{i}")
        for i in range(args.others)
    ]
    for other in others:
        await other.generate(request("Hi", 8))
    beside = await rate(worker, args.max_tokens, args.repeats)
    for other in others:
        await other.close()
    alone_after = await rate(worker, args.max_tokens, args.repeats)
    await worker.close()

    alone = (alone_before + alone_after) / 2
    table = Table(title=f"one llama.cpp worker, single stream, greedy, {args.max_tokens} tokens")
    for column in ("measured", "tok/s (median)", "vs alone"):
        table.add_column(column, justify="left" if column == "measured" else "right")
    table.add_row("alone (before / after)", f"{alone_before:.1f} / {alone_after:.1f}", "1.00")
    ratio = beside / alone
    table.add_row(f"with {args.others} idle workers alive", f"{beside:.1f}", f"{ratio:.2f}")
    Console(width=120).print(table)


if __name__ == "__main__":
    asyncio.run(main())
