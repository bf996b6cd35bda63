"""ThreadWeaver-style threads vs sequential decoding, side by side.

1. Scripted: a FakeWorker emits the parallel-block tags with a realistic per-token delay; the
   threads run concurrently, the sequential baseline decodes the same text in one stream.
2. Real model: the embedded worker with the format taught by the system prompt, threads vs one
   plain sample on the same prompts and token limit; reports how often the model opened a block.

    python benchmarks/threads_latency.py [--token-ms 15]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from rich.console import Console
from rich.table import Table

import threadloom as tl
from threadloom.types import GenerationRequest
from threadloom.workers.llamacpp.worker import LlamaCppWorker

THREAD_BODY = " ".join(["step"] * 40)
OUTLINES = "".join(f"<Outline>{i}: part {i}</Outline>\n" for i in range(1, 5))
OPENING = "Plan.\n<Parallel>\n<Outlines>\n" + OUTLINES + "</Outlines>"
CLOSING = "Combine the parts. Answer: 42"
FULL = (
    OPENING
    + "\n"
    + "".join(f"<Thread>\n{i}: {THREAD_BODY}\n</Thread>\n" for i in range(1, 5))
    + "</Parallel>\n"
    + CLOSING
)


def scripted(request: GenerationRequest, index: int) -> str:
    if request.prefix.endswith(":"):
        return f" {THREAD_BODY}\n</Thread>"
    if "</Parallel>" in request.prefix:
        return CLOSING
    return OPENING


async def scripted_case(token_s: float) -> tuple[float, float, int]:
    started = time.perf_counter()
    await tl.arun(
        "Solve it.",
        "threads",
        worker=tl.FakeWorker(scripted, token_delay_s=token_s),
        params=tl.SamplingParams(max_tokens=400),
    )
    threads_s = time.perf_counter() - started
    started = time.perf_counter()
    sequential = await tl.arun(
        "Solve it.",
        "single",
        worker=tl.FakeWorker([FULL], token_delay_s=token_s),
        params=tl.SamplingParams(max_tokens=1000),
    )
    return threads_s, time.perf_counter() - started, sequential.usage.completion_tokens


PROMPTS = [
    "What is (2 + 3) * (4 + 5)?",
    "Compute (10 - 4) + (3 * 3).",
    "What is (6 * 2) - (8 / 2)?",
    "Add the sums 1 + 2 and 3 + 4.",
    "What is (7 + 1) * (2 + 2)?",
]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--token-ms", type=float, default=15.0)
    parser.add_argument("--max-tokens", type=int, default=160)
    args = parser.parse_args()
    console = Console(width=150)
    threads_s, seq_s, tokens = await scripted_case(args.token_ms / 1000)
    table = Table(title=f"scripted worker, {args.token_ms:.0f} ms/token, 4 threads x 40 tokens")
    for column in ("threads s", "sequential s", "speed-up", "sequential tokens"):
        table.add_column(column, justify="right")
    table.add_row(f"{threads_s:.2f}", f"{seq_s:.2f}", f"{seq_s / threads_s:.2f}x", str(tokens))
    console.print(table)

    worker = LlamaCppWorker()
    params = tl.SamplingParams(max_tokens=args.max_tokens, temperature=0.3)
    real = Table(title="embedded model, format taught by the system prompt")
    for column in ("prompt", "plain s", "threads s", "ratio", "blocks", "threads answer"):
        real.add_column(
            column, justify="left" if column in ("prompt", "threads answer") else "right"
        )
    opened = 0
    for i, prompt in enumerate(PROMPTS):
        started = time.perf_counter()
        await tl.arun(prompt, "single", worker=worker, params=params, seed=i)
        plain_s = time.perf_counter() - started
        started = time.perf_counter()
        result = await tl.arun(
            prompt, "threads:thread_tokens=48", worker=worker, params=params, seed=i
        )
        thread_s = time.perf_counter() - started
        blocks = result.best.metadata.get("blocks", 0) if result.best else 0
        opened += blocks > 0
        real.add_row(
            prompt,
            f"{plain_s:.2f}",
            f"{thread_s:.2f}",
            f"{plain_s / thread_s:.2f}x",
            str(blocks),
            str(result.answer)[:30],
        )
    await worker.close()
    console.print(real)
    console.print(f"[dim]the model opened a parallel block on {opened}/{len(PROMPTS)} prompts[/]")


if __name__ == "__main__":
    asyncio.run(main())
