"""A batch job on a Ray cluster: Best-of-N over a dataset, spread over the generator actors.

Submit it to a running cluster (from the directory holding this file):

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python cluster_job.py --workers cluster.yaml --limit 20

`ray job submit` sets RAY_ADDRESS for the job, so the pools join that cluster; run directly,
the script starts a local Ray instead. Each problem prints a line as it finishes (that is the
live output `ray job submit` and `ray job logs --follow` show), results stream to a JSONL file,
and rerunning the job skips the problems already in it.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from threadloom import data
from threadloom.evaluation.bench import Verifiers, run_bench
from threadloom.evaluation.records import BenchRecord, ResultLog
from threadloom.strategies.registry import make_strategy
from threadloom.types import SamplingParams
from threadloom.workers.ray.cluster import RayCluster

HERE = Path(__file__).resolve().parent


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=Path, default=HERE / "cluster.yaml")
    parser.add_argument("--dataset", default="arithmetic")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--n", type=int, default=8, help="Samples per problem.")
    parser.add_argument("--concurrency", type=int, default=8, help="Problems in flight.")
    # outside the job's working directory, which Ray unpacks afresh for every submission
    parser.add_argument(
        "--out", type=Path, default=Path.home() / "threadloom-runs" / "cluster-job.jsonl"
    )
    args = parser.parse_args()

    cluster = RayCluster(args.workers)  # RAY_ADDRESS (set by `ray job submit`) or local
    try:
        await cluster.wait_ready()
        for actor in await cluster.describe():
            print(
                f"actor {actor['worker_id']:<16} pool {actor['pool']:<4} "
                f"node {actor['node_ip']} ({actor['node_id'][:8]}) {actor['resources']}",
                flush=True,
            )
        problems = data.load(args.dataset, limit=args.limit)
        started = time.perf_counter()

        def progress(record: BenchRecord) -> None:
            mark = "ok " if record.correct else ("ERR" if record.error else "no ")
            print(
                f"[{time.perf_counter() - started:6.1f}s] {mark} {record.problem_id:<14} "
                f"answer={record.answer!s:<8} reference={record.reference:<8} "
                f"{record.completion_tokens} tokens",
                flush=True,
            )

        records = await run_bench(
            problems,
            [make_strategy(f"best-of-n:n={args.n}")],
            cluster,
            ResultLog(args.out),
            dataset=args.dataset,
            verifiers=Verifiers(selection="auto"),
            params=SamplingParams(temperature=0.8, max_tokens=128),
            concurrency=args.concurrency,
            on_record=progress,
        )
        done = [r for r in records if r.error is None]
        seconds = time.perf_counter() - started
        tokens = cluster.usage.completion_tokens
        print(
            f"{len(done)} problems this run, {sum(r.correct for r in done)} correct · "
            f"{tokens} tokens in {seconds:.1f}s ({tokens / max(seconds, 1e-9):.0f} tok/s) · "
            f"failovers {cluster.generator.failovers} · results in {args.out}",
            flush=True,
        )
    finally:
        await cluster.close()


if __name__ == "__main__":
    asyncio.run(main())
