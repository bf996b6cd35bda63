"""How full does a self-consistency bench keep the worker's batch? Side by side, in one run.

Three measurements on the embedded SmolLM2-135M worker (its default slots):

1. raw decode limit: one best-of-n request with n = slots on one prompt (every sequence in
   the batch from start to end), aggregate completion tokens per second;
2. the bench as it runs by default: problems' samples share the slots first come first served;
3. the bench one problem group at a time: slots / n problems at once, each holding its slots
   until its slowest sample ends (how benches ran before the slot gate).

For 2 and 3 it prints the mean batch occupancy (requests on the worker, time-averaged over the
bench), the aggregate tok/s, and both as a share of the raw limit; and the rate counting the
prompt tokens each problem prefilled as well, work that the raw runs (one short prompt, cached
once) do not have.

    python benchmarks/batch_occupancy.py [--problems 16] [--n 8] [--max-tokens 256]
        [--raw-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

import threadloom as tl
from threadloom.data import load
from threadloom.evaluation.bench import Verifiers, run_bench
from threadloom.evaluation.occupancy import SlotGate
from threadloom.evaluation.records import ResultLog
from threadloom.strategies.registry import make_strategy
from threadloom.workers.llamacpp.worker import LlamaCppWorker

PROMPT = "Write a short story about a robot who learns to paint."


async def raw_decode(worker: LlamaCppWorker, sequences: int, max_tokens: int) -> float:
    """Aggregate tok/s of `sequences` samples decoded together from start to end."""
    params = tl.SamplingParams(temperature=0.8, max_tokens=max_tokens, stop=())
    started = time.perf_counter()
    result = await tl.arun(PROMPT, "best-of-n", n=sequences, worker=worker, params=params, seed=1)
    return result.usage.completion_tokens / (time.perf_counter() - started)


async def bench(
    worker: LlamaCppWorker, args: argparse.Namespace, *, shared: bool, seed: int
) -> tuple[float, float, float, float]:
    """(mean occupancy, busy occupancy, completion tok/s, completion and prefilled prompt tok/s)
    of one self-consistency bench."""
    problems = load("arithmetic", limit=args.problems, seed=seed)
    slots = worker.capabilities.max_batch
    if shared:
        gate, concurrency = SlotGate(worker), None
    else:
        # no slot sharing: a group of slots / n problems at a time
        gate, concurrency = SlotGate(worker, slots=10_000), max(1, slots // args.n)
    params = tl.SamplingParams(temperature=0.8, max_tokens=args.max_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        gate.reset_stats()
        started = time.perf_counter()
        records = await run_bench(
            problems, [make_strategy(f"self-consistency:n={args.n}")], gate,
            ResultLog(Path(tmp) / "r.jsonl"), dataset="arithmetic",
            verifiers=Verifiers(selection="none"), params=params, seed=seed,
            concurrency=concurrency,
        )
        wall = time.perf_counter() - started
    tokens = sum(r.completion_tokens for r in records)
    prefilled = sum(r.prompt_tokens - r.cached_prompt_tokens for r in records)
    return gate.mean_occupancy(), gate.busy_occupancy(), tokens / wall, (tokens + prefilled) / wall


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--raw-tokens", type=int, default=64,
                        help="Tokens per sequence of the raw decode runs.")
    args = parser.parse_args()

    worker = LlamaCppWorker()
    slots = worker.capabilities.max_batch
    await raw_decode(worker, 2, 16)  # warm-up: page in the weights
    raw_before = await raw_decode(worker, slots, args.raw_tokens)
    shared = await bench(worker, args, shared=True, seed=args.seed)
    grouped = await bench(worker, args, shared=False, seed=args.seed)
    raw_after = await raw_decode(worker, slots, args.raw_tokens)
    await worker.close()
    raw = (raw_before + raw_after) / 2

    table = Table(
        title=f"self-consistency n={args.n}, {args.problems} arithmetic problems, "
        f"{slots} slots, max_tokens={args.max_tokens}"
    )
    columns = ("run", "mean occupancy", "busy occupancy", "tok/s", "share of raw tok/s",
               "with prefill tok/s", "its share of raw")
    for column in columns:
        table.add_column(column, justify="left" if column == "run" else "right")
    table.add_row(f"raw decode, {slots} sequences (before / after)", f"{slots}", f"{slots}",
                  f"{raw_before:.1f} / {raw_after:.1f}", "1.00", "", "")
    for name, (mean, busy, rate, processed) in (
        ("bench, slots shared across problems", shared),
        (f"bench, {max(1, slots // args.n)} problems at a time", grouped),
    ):
        table.add_row(name, f"{mean:.1f}", f"{busy:.1f}", f"{rate:.1f}", f"{rate / raw:.2f}",
                      f"{processed:.1f}", f"{processed / raw:.2f}")
    Console(width=170).print(table)
    print("with prefill: completion tokens plus the prompt tokens each problem had to prefill "
          "(not served from the prefix cache), the work the raw runs do not have")


if __name__ == "__main__":
    asyncio.run(main())
