"""What isolation costs: bwrap isolation vs Python guards only, side by side in one run.

Three measurements, each taken for both isolations, interleaved so that machine noise hits both:

* a trivial program (`pass`) through `run_in_sandbox`: the fixed cost of one sandbox;
* one HumanEval problem (its canonical solution) through `CodeVerifier.score`: one verification,
  two processes talking over the call pipe;
* all bundled HumanEval canonical solutions, graded at the verifier's concurrency: grading
  throughput alone;
* with `--bench N`: `threadloom bench --dataset humaneval --limit N -s single` on the bundled
  model, once per isolation (`--sandbox`), timed end to end: the throughput a user sees.

    python benchmarks/sandbox_overhead.py [--repeats 20] [--concurrency 2] [--bench 10]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from threadloom.data import load
from threadloom.types import Candidate, Problem
from threadloom.verifiers.code import CodeVerifier
from threadloom.verifiers.sandbox import Isolation, check_isolation, run_in_sandbox

ISOLATIONS: tuple[Isolation, ...] = ("bwrap", "guards")


def canonical(problem: Problem) -> Candidate:
    solution = problem.metadata["prompt_code"] + problem.metadata["canonical_solution"]
    return Candidate(text=f"```python\n{solution}\n```")


async def timed(step: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await step()
    return time.perf_counter() - started


async def per_run(
    repeats: int, step: Callable[[Isolation], Awaitable[object]]
) -> dict[Isolation, list[float]]:
    samples: dict[Isolation, list[float]] = {isolation: [] for isolation in ISOLATIONS}
    for isolation in ISOLATIONS:  # warm up: imports, the isolation check, page cache
        await step(isolation)
    for _ in range(repeats):
        for isolation in ISOLATIONS:
            samples[isolation].append(await timed(lambda i=isolation: step(i)))  # type: ignore[misc]
    return samples


def bench_seconds(isolation: Isolation, problems: int, max_tokens: int) -> float:
    """Wall time of one `threadloom bench` run on the bundled model (a fresh results file)."""
    with tempfile.TemporaryDirectory() as scratch:
        command = [
            sys.executable, "-m", "threadloom.cli", "bench", "--dataset", "humaneval",
            "--limit", str(problems), "-s", "single", "--max-tokens", str(max_tokens),
            "--sandbox", isolation, "--out", str(Path(scratch) / "results.jsonl"), "--json",
        ]  # fmt: skip
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        return time.perf_counter() - started


async def main(repeats: int, concurrency: int, bench: int, max_tokens: int) -> None:
    logging.disable(logging.WARNING)  # the guards' warning on every run
    check_isolation()
    problems = load("humaneval")
    verifiers = {
        isolation: CodeVerifier(isolation=isolation, max_concurrency=concurrency)
        for isolation in ISOLATIONS
    }
    problem = problems[0]

    async def trivial(isolation: Isolation) -> object:
        return await run_in_sandbox("pass", isolation=isolation)

    async def one_problem(isolation: Isolation) -> object:
        score = await verifiers[isolation].score(problem, canonical(problem))
        assert score.passed, score.detail
        return score

    async def all_problems(isolation: Isolation) -> object:
        verifier = verifiers[isolation]
        scores = await asyncio.gather(*(verifier.score(p, canonical(p)) for p in problems))
        assert all(s.passed for s in scores)
        return scores

    rows = [
        ("trivial program", "ms per run", await per_run(repeats, trivial), 1000.0),
        (f"HumanEval {problem.id}", "ms per check", await per_run(repeats, one_problem), 1000.0),
        (
            f"{len(problems)} HumanEval, concurrency {concurrency}",
            "verifications per s",
            await per_run(max(2, repeats // 10), all_problems),
            None,
        ),
    ]  # fmt: skip
    table = Table(title="sandbox overhead: bwrap isolation vs Python guards (medians)")
    for column in ("workload", "unit", "bwrap", "guards", "bwrap - guards", "bwrap / guards"):
        table.add_column(column, justify="left" if column in ("workload", "unit") else "right")
    for name, unit, samples, scale in rows:
        bwrap, guards = (statistics.median(samples[i]) for i in ISOLATIONS)
        if scale is None:  # throughput: higher is better
            rate_b, rate_g = len(problems) / bwrap, len(problems) / guards
            table.add_row(
                name, unit, f"{rate_b:.1f}", f"{rate_g:.1f}", f"{rate_b - rate_g:+.1f}",
                f"{rate_b / rate_g:.2f}",
            )  # fmt: skip
        else:
            table.add_row(
                name, unit, f"{bwrap * scale:.1f}", f"{guards * scale:.1f}",
                f"{(bwrap - guards) * scale:+.1f}", f"{bwrap / guards:.2f}",
            )  # fmt: skip
    if bench:
        seconds = {
            isolation: bench_seconds(isolation, bench, max_tokens) for isolation in ISOLATIONS
        }
        rate_b, rate_g = (bench / seconds[isolation] for isolation in ISOLATIONS)
        table.add_row(
            f"bench humaneval, {bench} problems, single", "problems per s", f"{rate_b:.3f}",
            f"{rate_g:.3f}", f"{rate_b - rate_g:+.3f}", f"{rate_b / rate_g:.2f}",
        )  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="Runs per isolation.")
    parser.add_argument("--concurrency", type=int, default=2, help="Verifications at once.")
    parser.add_argument(
        "--bench", type=int, default=0, help="Problems for the bench run (0: skip)."
    )
    parser.add_argument("--max-tokens", type=int, default=200, help="Tokens per answer in bench.")
    args = parser.parse_args()
    asyncio.run(main(args.repeats, args.concurrency, args.bench, args.max_tokens))
