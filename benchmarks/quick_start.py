"""The quick-start question: one sample against a strategy, over many seeds, side by side.

Runs each candidate question with `single` and with a strategy (default self-consistency n=8)
on the bundled model, once per seed, with the sampling settings of `threadloom run` (temperature
0.7, top_p 0.95, 256 tokens), and prints how often each got the reference answer. The README's
first command is the question this picks: mostly wrong alone, mostly right with the strategy.

    python benchmarks/quick_start.py [--seeds 20] [--strategy self-consistency:n=8]
    python benchmarks/quick_start.py --only single      # screen questions cheaply first
    python benchmarks/quick_start.py --question "..." --reference 42
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

import threadloom as tl
from threadloom.verifiers.numeric import NumericVerifier
from threadloom.workers.llamacpp.worker import LlamaCppWorker

CANDIDATES: tuple[tuple[str, str], ...] = (
    (
        "Mia has 6 boxes with 4 cookies in each. How many cookies does Mia have in total? "
        "Give the final answer as a number.",
        "24",
    ),
    (
        "Sam has 4 boxes with 6 pencils in each. How many pencils does Sam have in total? "
        "Give the final answer as a number.",
        "24",
    ),
    (
        "Sam has 4 boxes with 7 pencils in each. How many pencils does Sam have in total? "
        "Give the final answer as a number.",
        "28",
    ),
    (
        "Tom has 5 bags with 3 apples in each. How many apples does Tom have? "
        "Give the final answer as a number.",
        "15",
    ),
    ("A box holds 12 eggs. How many eggs are in 3 boxes? Give the final answer as a number.",
     "36"),
    ("What is 23 + 48? Give only the number.", "71"),
    ("What is 7 times 8? Give only the number.", "56"),
    ("What is 17 + 25? Give only the number.", "42"),
)
"""(question, reference) pairs tried, the README's first: word problems of the kind in
threadloom/data/arithmetic.py and bare sums."""


@dataclass(frozen=True)
class Trial:
    """One question under one strategy over all seeds."""

    question: str
    strategy: str
    answers: list[str | None]
    hits: int
    completion_tokens: int
    wall_s: float


async def _hit(
    worker: LlamaCppWorker,
    question: str,
    reference: str,
    strategy: str,
    seed: int,
    params: tl.SamplingParams,
) -> tuple[str | None, bool, int]:
    # --verifier numeric, as in the README: answers are read as numbers (and so voted on as
    # numbers); without a reference it judges nothing
    result = await tl.arun(
        question, strategy, worker=worker, verifier="numeric", seed=seed, params=params
    )
    judged = await NumericVerifier().score(
        tl.Problem(prompt=question, reference=reference),
        tl.Candidate(text=result.answer or "", answer=result.answer),
    )
    return result.answer, bool(judged.passed), result.usage.completion_tokens


async def trial(
    worker: LlamaCppWorker,
    question: str,
    reference: str,
    strategy: str,
    seeds: int,
    params: tl.SamplingParams,
) -> Trial:
    """Run `question` with `strategy` once per seed 0..seeds-1, all seeds at once."""
    started = time.perf_counter()
    outcomes = await asyncio.gather(
        *(_hit(worker, question, reference, strategy, s, params) for s in range(seeds))
    )
    return Trial(
        question=question,
        strategy=strategy,
        answers=[answer for answer, _, _ in outcomes],
        hits=sum(ok for _, ok, _ in outcomes),
        completion_tokens=sum(tokens for _, _, tokens in outcomes),
        wall_s=time.perf_counter() - started,
    )


def _spread(answers: list[str | None]) -> str:
    counts = Counter(a if a is not None else "-" for a in answers)
    return " ".join(f"{answer}×{count}" for answer, count in counts.most_common(4))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--strategy", default="self-consistency:n=8")
    parser.add_argument("--only", choices=("single", "strategy"), default=None)
    parser.add_argument("--question", action="append", default=None)
    parser.add_argument("--reference", action="append", default=None)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.7)
    args = parser.parse_args()
    if args.question:
        if len(args.question) != len(args.reference or []):
            parser.error("give one --reference per --question")
        pairs = list(zip(args.question, args.reference, strict=True))
    else:
        pairs = list(CANDIDATES)
    strategies = {None: ["single", args.strategy], "single": ["single"]}.get(
        args.only, [args.strategy]
    )
    params = tl.SamplingParams(temperature=args.temperature, top_p=0.95, max_tokens=args.max_tokens)
    worker = LlamaCppWorker()
    out = Console()
    table = Table(title=f"right answers over {args.seeds} seeds (bundled SmolLM2-135M)")
    for column in ("question", "reference", "strategy", "hit rate", "answers", "tokens", "s"):
        table.add_column(column, justify="left" if column in ("question", "answers") else "right")
    try:
        for question, reference in pairs:
            for strategy in strategies:
                t = await trial(worker, question, reference, strategy, args.seeds, params)
                row = (
                    Text(question[:60]),
                    reference,
                    strategy,
                    f"{t.hits}/{args.seeds} ({100 * t.hits / args.seeds:.0f}%)",
                    Text(_spread(t.answers)),
                    f"{t.completion_tokens}",
                    f"{t.wall_s:.0f}",
                )
                table.add_row(*row)
                out.print(Text(" | ".join(str(cell) for cell in row)))
    finally:
        await worker.close()
    out.print(table)


if __name__ == "__main__":
    asyncio.run(main())
