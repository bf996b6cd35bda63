"""Serving load: the same runs through `threadloom serve` and through the in-process API.

C concurrent clients each ask for self-consistency (n samples) on the bundled model, once
through the Python API (`arun` on a shared LlamaCppWorker) and once through the
OpenAI-compatible server (the `openai` SDK's async client, over loopback, against a server on
the same worker). Each round runs both, in an order that flips every round, so drift in the
load of a shared machine hits both alike.
Printed side by side: aggregate completion tokens/s and their ratio (server / in-process), p50
and p99 latency, and the server's own overhead per request (what the client waited beyond the
run's own wall time).

    python benchmarks/serve_load.py [--clients 16] [--n 8] [--max-tokens 48] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import openai
import uvicorn
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from openai_server import HOST, free_port

import threadloom as tl
from threadloom.serve import ServeConfig, create_app
from threadloom.workers.llamacpp.worker import LlamaCppWorker

QUESTIONS = [
    "What is 17 + 25?",
    "What is 9 times 7?",
    "What is 100 minus 37?",
    "What is 12 + 30?",
]
TIME_LIMIT_S = 1800.0
"""The whole benchmark stops past this (default); the rounds finished by then are reported."""


@dataclass
class Phase:
    """One batch of concurrent runs."""

    wall_s: float = 0.0
    tokens: int = 0
    latencies: list[float] = field(default_factory=list)
    overheads: list[float] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def in_process(worker: LlamaCppWorker, clients: int, n: int, max_tokens: int) -> Phase:
    phase = Phase()

    async def one(index: int) -> None:
        started = time.perf_counter()
        result = await tl.arun(
            QUESTIONS[index % len(QUESTIONS)],
            f"self-consistency:n={n}",
            worker=worker,
            params=tl.SamplingParams(max_tokens=max_tokens),
            seed=index,
        )
        phase.latencies.append(time.perf_counter() - started)
        phase.tokens += result.usage.completion_tokens

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(clients)))
    phase.wall_s = time.perf_counter() - started
    return phase


async def through_server(base_url: str, clients: int, n: int, max_tokens: int) -> Phase:
    phase = Phase()
    async with openai.AsyncOpenAI(
        base_url=base_url, api_key="unused", max_retries=0, timeout=TIME_LIMIT_S
    ) as client:

        async def one(index: int) -> None:
            started = time.perf_counter()
            reply = await client.chat.completions.create(
                model=f"self-consistency:n={n}",
                messages=[{"role": "user", "content": QUESTIONS[index % len(QUESTIONS)]}],
                max_tokens=max_tokens,
                seed=index,
            )
            latency = time.perf_counter() - started
            assert reply.usage is not None
            phase.latencies.append(latency)
            phase.tokens += reply.usage.completion_tokens
            phase.overheads.append(latency - reply.usage.model_extra["threadloom"]["wall_time_s"])

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(clients)))
        phase.wall_s = time.perf_counter() - started
    return phase


def start_server(worker: LlamaCppWorker, clients: int) -> tuple[uvicorn.Server, str]:
    port = free_port()
    app = create_app(ServeConfig(host=HOST, port=port, max_concurrent_runs=clients), worker)
    server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://{HOST}:{port}/v1"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--slots", type=int, default=0, help="worker batch slots (0: default)")
    parser.add_argument("--time-limit", type=float, default=TIME_LIMIT_S, help="seconds in all")
    args = parser.parse_args()
    worker = LlamaCppWorker(n_slots=args.slots) if args.slots else LlamaCppWorker()
    server, base_url = start_server(worker, args.clients)
    console = Console()
    local: list[Phase] = []
    served: list[Phase] = []
    try:
        async with asyncio.timeout(args.time_limit):
            await in_process(worker, 2, 2, 8)  # warm up both paths
            await through_server(base_url, 2, 2, 8)
            for round_index in range(args.rounds):
                # the order flips every round, so a trend in the machine's load hits both alike
                if round_index % 2:
                    served.append(
                        await through_server(base_url, args.clients, args.n, args.max_tokens)
                    )
                local.append(await in_process(worker, args.clients, args.n, args.max_tokens))
                if not round_index % 2:
                    served.append(
                        await through_server(base_url, args.clients, args.n, args.max_tokens)
                    )
                console.print(
                    f"round {round_index + 1}: in-process {local[-1].tokens_per_s:.0f} tok/s, "
                    f"server {served[-1].tokens_per_s:.0f} tok/s"
                )
    except TimeoutError:
        console.print(f"stopped at the {args.time_limit:.0f} s limit")
    finally:
        server.should_exit = True
        await worker.close()
    rounds = min(len(local), len(served))
    if rounds:
        report(console, args, local[:rounds], served[:rounds])


def report(
    console: Console, args: argparse.Namespace, local: list[Phase], served: list[Phase]
) -> None:
    table = Table(
        title=f"{args.clients} clients x self-consistency n={args.n}, "
        f"max_tokens={args.max_tokens}, {len(local)} rounds"
    )
    for column in ("path", "tok/s", "p50 latency s", "p99 latency s", "overhead/request ms"):
        table.add_column(column, justify="right" if column != "path" else "left")
    for name, phases in (("in-process API", local), ("threadloom serve", served)):
        latencies = [x for p in phases for x in p.latencies]
        overheads = [x for p in phases for x in p.overheads]
        table.add_row(
            name,
            f"{statistics.median(p.tokens_per_s for p in phases):.0f}",
            f"{percentile(latencies, 0.5):.2f}",
            f"{percentile(latencies, 0.99):.2f}",
            f"{1000 * statistics.median(overheads):.1f}" if overheads else "-",
        )
    console.print(table)
    ratios = [s.tokens_per_s / lo.tokens_per_s for s, lo in zip(served, local, strict=True)]
    console.print(
        f"tokens/s ratio server / in-process: median {statistics.median(ratios):.3f} "
        f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)}; target >= 0.9)"
    )


if __name__ == "__main__":
    asyncio.run(main())
