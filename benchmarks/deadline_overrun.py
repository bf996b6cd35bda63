"""How far past its wall-time budget a run returns, and how soon the worker stops decoding.

Best-of-N with long replies and a deadline that cuts every sample short, on a scripted worker
(10 ms a token) and on the bundled model, side by side:

    python benchmarks/deadline_overrun.py [--runs 8] [--deadline 1.0] [--n 4]

Overrun = wall time of the run minus its budget (target: under 0.2 s). "stopped after" is the
time from the run's return until the worker has no live sequence left (the engine drops an
aborted sequence at its next step boundary).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import threadloom as tl
from threadloom.types import Budget, SamplingParams

STORY = "Write a long story about a lighthouse keeper and the sea, in many paragraphs."


async def one_run(worker: Any, deadline: float, n: int, seed: int) -> tuple[float, float, int]:
    started = time.perf_counter()
    result = await tl.arun(STORY, "best-of-n", n=n, worker=worker, seed=seed,
                           params=SamplingParams(max_tokens=1000, temperature=0.8),
                           budget=Budget(max_wall_time_s=deadline))
    returned = time.perf_counter()
    while _live(worker) and time.perf_counter() - returned < 10:
        await asyncio.sleep(0.005)
    stopped = time.perf_counter()
    assert result.truncated
    return returned - started - deadline, stopped - returned, result.usage.completion_tokens


def _live(worker: Any) -> int:
    if isinstance(worker, tl.FakeWorker):
        return worker.in_flight
    return int(worker.stats()["live_sequences"])


async def measure(name: str, worker: Any, args: argparse.Namespace) -> None:
    await one_run(worker, args.deadline, args.n, seed=0)  # warm-up
    rows = [await one_run(worker, args.deadline, args.n, seed=i + 1) for i in range(args.runs)]
    overruns = [r[0] * 1000 for r in rows]
    stops = [r[1] * 1000 for r in rows]
    tokens = statistics.mean(r[2] for r in rows)
    print(f"{name:>10} | overrun ms median {statistics.median(overruns):6.1f} "
          f"max {max(overruns):6.1f} | stopped after ms median {statistics.median(stops):6.1f} "
          f"max {max(stops):6.1f} | tokens before the deadline {tokens:6.1f}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--deadline", type=float, default=1.0)
    parser.add_argument("--n", type=int, default=4)
    args = parser.parse_args()
    print(f"best-of-n n={args.n}, budget {args.deadline} s, {args.runs} runs each")
    await measure("scripted", tl.FakeWorker([" ".join(["word"] * 1000)], token_delay_s=0.01),
                  args)
    from threadloom.workers.llamacpp.worker import LlamaCppWorker

    worker = LlamaCppWorker()
    try:
        await measure("llama.cpp", worker, args)
    finally:
        await worker.close()


if __name__ == "__main__":
    asyncio.run(main())
