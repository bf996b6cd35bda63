"""Orchestration overhead per generation on a zero-latency FakeWorker, beside a bare gather.

Every case (single, best-of-8 with and without a verifier, self-consistency over 8, best-of-64)
is measured in rounds. A round runs a block of bare `asyncio.gather` calls of the same
FakeWorker requests, then a block of threadloom runs with as many generations. The best round
of each side is reported, being the one least disturbed by other work on the machine: its
microseconds per generation, the difference (threadloom's overhead) and the ratio.

    python benchmarks/orchestration_overhead.py [--rounds 7] [--gens 800] [--clock cpu]
    python benchmarks/orchestration_overhead.py --compare-to REV

With --compare-to, the package as it is at git revision REV (exported to a temporary folder)
is measured too, in a second process that takes its rounds in turn with one measuring this
tree, so both sides see the same machine. `--clock cpu` (the default) counts the process's CPU
time, which other programs on a shared machine do not inflate; `--clock wall` counts elapsed
time.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

import threadloom as tl
from threadloom.types import ChatMessage, GenerationRequest, SamplingParams

PROMPT = "What is 17 + 25?"
REPO = Path(__file__).resolve().parents[1]
CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}


@dataclass(frozen=True)
class Case:
    strategy: str
    verifier: str | None
    n: int

    @property
    def name(self) -> str:
        size = "" if self.strategy == "single" else f" n={self.n}"
        return f"{self.strategy}{size}" + (f" +{self.verifier}" if self.verifier else "")


CASES = (
    Case("single", None, 1),
    Case("best-of-n", None, 8),
    Case("best-of-n", "numeric", 8),
    Case("self-consistency", None, 8),
    Case("best-of-n", None, 64),
)

Round = dict[str, tuple[float, float]]
"""Case name -> (bare, threadloom) seconds per generation, for one round."""


async def bare(worker: tl.FakeWorker, n: int, runs: int, clock: Callable[[], float]) -> float:
    messages = (ChatMessage(role="user", content=PROMPT),)
    params = SamplingParams(logprobs=0)
    started = clock()
    for _ in range(runs):
        await asyncio.gather(
            *(
                worker.generate(GenerationRequest(messages=messages, params=params))
                for _ in range(n)
            )
        )
    return (clock() - started) / (runs * n)


async def orchestrated(
    worker: tl.FakeWorker, case: Case, runs: int, clock: Callable[[], float]
) -> float:
    options = {} if case.strategy == "single" else {"n": case.n}
    arun = tl.arun  # looked up once, as `from threadloom import arun` would
    started = clock()
    for _ in range(runs):
        await arun(PROMPT, case.strategy, worker=worker, verifier=case.verifier, **options)
    return (clock() - started) / (runs * case.n)


class Measurer:
    """Measures rounds of every case in this process."""

    def __init__(self, gens: int, clock: str) -> None:
        self.worker = tl.FakeWorker(["The answer is 42"])
        self.gens = gens
        self.clock = CLOCKS[clock]
        self._warm = False

    async def round(self) -> Round:
        if not self._warm:  # imports, caches, the allocator's pools
            for case in CASES:
                await bare(self.worker, case.n, 3, self.clock)
                await orchestrated(self.worker, case, 3, self.clock)
            self._warm = True
        measured: Round = {}
        for case in CASES:
            runs = max(1, self.gens // case.n)
            per_bare = await bare(self.worker, case.n, runs, self.clock)
            per_run = await orchestrated(self.worker, case, runs, self.clock)
            measured[case.name] = (per_bare, per_run)
        return measured


async def serve_rounds(measurer: Measurer) -> None:
    """Child mode: one round per line read from stdin, each answered as a JSON line."""
    for _ in sys.stdin:
        print(json.dumps(await measurer.round()), flush=True)


class Side:
    """A child process measuring the package found at `package_root`."""

    def __init__(self, label: str, package_root: Path, args: argparse.Namespace) -> None:
        self.label = label
        env = {**os.environ, "PYTHONPATH": str(package_root)}
        command = [sys.executable, __file__, "--child", "--gens", str(args.gens)]
        self._process = subprocess.Popen(
            [*command, "--clock", args.clock],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=package_root,
        )

    def round(self) -> Round:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write("round\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise SystemExit(f"the {self.label} side stopped (see its error above)")
        return {name: (pair[0], pair[1]) for name, pair in json.loads(line).items()}

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(timeout=60)


def export_package(revision: str, into: Path) -> str:
    """Write the `threadloom` package as it is at `revision` into `into`; its short hash."""
    found = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "--verify", f"{revision}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        raise SystemExit(f"--compare-to {revision!r} is not a commit of {REPO}")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", revision, "threadloom"],
        capture_output=True,
        check=True,
    )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return found.stdout.strip()


def best(rounds: list[Round]) -> Round:
    """Per case, the fastest bare and the fastest threadloom round."""
    return {
        name: (min(r[name][0] for r in rounds), min(r[name][1] for r in rounds))
        for name in rounds[0]
    }


def report(sides: dict[str, Round], args: argparse.Namespace, load: str) -> None:
    labels = list(sides)
    title = (
        f"orchestration overhead, zero-latency FakeWorker, best of {args.rounds} rounds of "
        f"{args.gens} generations, {args.clock} time, load average {load}"
    )
    table = Table(title=title)
    columns = ["case", "gens/run", "bare µs/gen"]
    for label in labels:
        columns += [f"{label} µs/gen", f"{label} overhead µs/gen", f"{label} ratio"]
    for column in columns:
        table.add_column(column, justify="right")
    for case in CASES:
        per_bare = sides[labels[-1]][case.name][0]
        row = [case.name, str(case.n), f"{1e6 * per_bare:.1f}"]
        for label in labels:
            side_bare, per_run = sides[label][case.name]
            row += [
                f"{1e6 * per_run:.1f}",
                f"{1e6 * (per_run - side_bare):.1f}",
                f"{per_run / side_bare:.2f}x",
            ]
        table.add_row(*row)
    Console(width=200).print(table)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--gens", type=int, default=800, help="generations per case per round")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    parser.add_argument("--compare-to", metavar="REV", help="also measure git revision REV")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        await serve_rounds(Measurer(args.gens, args.clock))
        return
    load = load_average()
    if args.compare_to is None:
        measurer = Measurer(args.gens, args.clock)
        rounds = [await measurer.round() for _ in range(args.rounds)]
        report({"threadloom": best(rounds)}, args, f"{load} → {load_average()}")
        return
    with tempfile.TemporaryDirectory(prefix="threadloom-") as folder:
        short = export_package(args.compare_to, Path(folder))
        sides = [Side(short, Path(folder), args), Side("this tree", REPO, args)]
        measured: dict[str, list[Round]] = {side.label: [] for side in sides}
        try:
            for index in range(args.rounds):
                for side in sides if index % 2 == 0 else sides[::-1]:
                    measured[side.label].append(side.round())
        finally:
            for side in sides:
                side.close()
    report({label: best(r) for label, r in measured.items()}, args, f"{load} → {load_average()}")


if __name__ == "__main__":
    asyncio.run(main())
