"""What Ray actors cost and buy: RayPool vs LocalPool, measured side by side in this run.

1. Per-generation overhead on a zero-latency FakeWorker: the same requests through a LocalPool
   (in-process) and a one-actor RayPool, one at a time and `--concurrency` at once.
   Microseconds per generation and their ratio.
2. Throughput of the embedded model (SmolLM2-135M, llama.cpp): the same batch of requests on
   one actor with all cores, on two actors with half the cores each, and in-process for
   reference. Completion tokens per second.

    python benchmarks/ray_overhead.py [--runs 300] [--concurrency 64] [--requests 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from threadloom.types import ChatMessage, GenerationRequest, SamplingParams
from threadloom.workers.fake import FakeWorker
from threadloom.workers.pool import LocalPool
from threadloom.workers.ray import cluster as ray_cluster
from threadloom.workers.ray.pool import RayPool

PROMPTS = [
    "Write a short story about a robot who learns to paint.",
    "Explain how a bicycle stays upright.",
    "List five uses for a paperclip and explain each.",
    "Describe the water cycle to a ten-year-old.",
]


def request(prompt: str = "What is 17 + 25?", **params: Any) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage(role="user", content=prompt),), params=SamplingParams(**params)
    )


async def per_generation(pool: Any, runs: int, concurrency: int) -> tuple[float, float]:
    """(µs per generation one at a time, µs per generation with `concurrency` in flight)."""
    for _ in range(20):  # warm-up
        await pool.generate(request())
    started = time.perf_counter()
    for _ in range(runs):
        await pool.generate(request())
    sequential = (time.perf_counter() - started) / runs
    batches = max(1, runs // concurrency)
    started = time.perf_counter()
    for _ in range(batches):
        await asyncio.gather(*(pool.generate(request()) for _ in range(concurrency)))
    concurrent = (time.perf_counter() - started) / (batches * concurrency)
    return 1e6 * sequential, 1e6 * concurrent


async def throughput(pool: Any, requests: int, max_tokens: int) -> tuple[float, int, float]:
    """(completion tokens per second, tokens, seconds) for `requests` requests at once."""
    await pool.generate(request(PROMPTS[0], max_tokens=8, temperature=0.0))  # warm-up
    batch = [
        request(PROMPTS[i % len(PROMPTS)], max_tokens=max_tokens, temperature=0.8, seed=i)
        for i in range(requests)
    ]
    started = time.perf_counter()
    done = await asyncio.gather(*(pool.generate(r) for r in batch))
    seconds = time.perf_counter() - started
    tokens = sum(c.usage.completion_tokens for c in done)
    return tokens / seconds, tokens, seconds


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--skip-model", action="store_true", help="Only the FakeWorker part.")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    console = Console(width=150)
    ray_cluster.connect(num_cpus=cores)
    try:
        local = LocalPool(FakeWorker(["The answer is 42"]))
        remote = RayPool("fake:The answer is 42", name="bench-fake", resources={"num_cpus": 0})
        await remote.wait_ready()
        local_seq, local_conc = await per_generation(local, args.runs, args.concurrency)
        ray_seq, ray_conc = await per_generation(remote, args.runs, args.concurrency)
        await remote.close()
        table = Table(title=f"per-generation overhead, zero-latency FakeWorker, {args.runs} runs")
        for column in ("mode", "LocalPool µs/gen", "RayPool µs/gen", "added µs/gen", "ratio"):
            table.add_column(column, justify="right")
        for mode, a, b in (
            ("one at a time", local_seq, ray_seq),
            (f"{args.concurrency} in flight", local_conc, ray_conc),
        ):
            table.add_row(mode, f"{a:.1f}", f"{b:.1f}", f"{b - a:.1f}", f"{b / a:.1f}x")
        console.print(table)
        if args.skip_model:
            return
        from threadloom.workers.llamacpp.worker import LlamaCppWorker

        rows = []
        model_options = {"n_ctx": 4096, "n_slots": args.requests}
        in_process = LocalPool(LlamaCppWorker(n_threads=cores, **model_options))
        rows.append(("in-process LlamaCppWorker", cores, await throughput(
            in_process, args.requests, args.max_tokens)))  # fmt: skip
        await in_process.close()
        for actors in (1, 2):
            pool = RayPool(
                "llamacpp",
                name=f"bench-llama{actors}",
                replicas=actors,
                resources={"num_cpus": cores / actors},
                options=model_options,
            )
            await pool.wait_ready()
            result = await throughput(pool, args.requests, args.max_tokens)
            rows.append((f"RayPool, {actors} actor{'s' * (actors > 1)}", cores // actors, result))
            await pool.close()
        table = Table(
            title=f"embedded model throughput: {args.requests} requests x {args.max_tokens} "
            f"tokens, {cores} cores"
        )
        for column in ("setup", "threads/actor", "tokens", "seconds", "tok/s", "vs 1 actor"):
            table.add_column(column, justify="right")
        one_actor = rows[1][2][0]
        for name, threads, (rate, tokens, seconds) in rows:
            table.add_row(name, str(threads), str(tokens), f"{seconds:.1f}", f"{rate:.1f}",
                          f"{rate / one_actor:.2f}x")  # fmt: skip
        console.print(table)
    finally:
        ray_cluster.shutdown()
    load = os.getloadavg()[0]
    console.print(f"[dim]load average at the end: {load:.2f} on {cores} cores (shared machine)[/]")


if __name__ == "__main__":
    asyncio.run(main())
