"""Hostile model output: time per reply through the whole answer path, next to a plain reply.

Each reply goes through what a run does with model text: answer extraction (every format), a
self-consistency vote over three copies, the numeric, game24 and rules verifiers, and the CLI's
result table printed into memory. The table shows the slowest of a few repeats per reply and its
ratio to the plain reply '... The answer is 42.', measured side by side on this machine.

    python benchmarks/hostile_output.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import time

from rich.console import Console
from rich.table import Table
from rich.text import Text

from threadloom.cli.results import print_result
from threadloom.orchestrator.runner import arun
from threadloom.types import Problem
from threadloom.verifiers.extract import extract_answer
from threadloom.verifiers.registry import make_verifier
from threadloom.workers.fake import FakeWorker

PLAIN = "We add 17 and 25. The answer is 42."
REPLIES = {
    "plain": PLAIN,
    "boxed 1e999999999": "\\boxed{1e999999999}",
    "boxed 1e5000": "\\boxed{1e5000}",
    "400 digits": "7" * 400,
    "100k digits": "7" * 100_000,
    "markup [/INST]": "Sure [/INST] [bold]x[/] :smile: The answer is 4",
    "lone surrogates": "bad \udcff\ud800 bytes, answer: 5",
    "1 MB of text": "word, " * 170_000 + "Answer: 3",
    "deep JSON": "[" * 100_000,
    "many braces": "\\boxed{" * 50_000,
}
FORMATS = ("auto", "text", "number", "boxed", "expression", "code", "json")


async def one_pass(reply: str) -> None:
    for fmt in FORMATS:
        extract_answer(reply, fmt)  # type: ignore[arg-type]
    result = await arun(
        "q", "self-consistency", worker=FakeWorker((reply,)), verifier="numeric", n=3,
        reference="42",
    )
    problem = Problem(prompt="q", metadata={"numbers": [4, 6, 1, 1], "rules": [
        {"kind": "json_keys", "keys": ["a"]}, {"kind": "max_words", "count": 5}]})
    for spec in ("game24", "rules"):
        await make_verifier(spec).score(problem, result.candidates[0])
    print_result(result, Console(file=io.StringIO(), width=150))


def slowest(reply: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        asyncio.run(one_pass(reply))
        times.append(time.perf_counter() - started)
    return max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    slowest(PLAIN, 1)  # warm up: imports and first-call caches
    baseline = slowest(PLAIN, args.repeats)
    table = Table(title="hostile replies through extraction, voting, verifiers and printing")
    table.add_column("reply")
    table.add_column("chars", justify="right")
    table.add_column("slowest pass (s)", justify="right")
    table.add_column("× plain", justify="right")
    for label, reply in REPLIES.items():
        seconds = baseline if reply is PLAIN else slowest(reply, args.repeats)
        table.add_row(Text(label), str(len(reply)), f"{seconds:.3f}", f"{seconds / baseline:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
