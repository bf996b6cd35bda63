"""Stopping rules and batch allocation replayed on recorded samples of the bundled model.

Draws `--samples` samples of every arithmetic problem on the embedded worker once, writing each
sample's vote key, correctness, completion tokens and mean log-probability to a JSONL log
(resumable: a rerun draws only the problems still missing). Then it replays, on those same
samples, self-consistency with 1..N samples, adaptive self-consistency under several stopping
rules, First-Finish and a batch budget under several allocation settings, and prints accuracy
and tokens per problem side by side with Wilson 95% intervals.

Replaying recorded samples compares the rules on identical draws, which separate runs cannot:
at 100 problems the sampling noise between two runs is larger than most rule differences. Most
adaptive rows take samples in the order they were drawn, one at a time, and so count no tokens
for samples that a live run with waves would abort part way; the "one wave" rows replay a live
run whose samples all decode together, finish shortest first and are aborted when the rule
fires.

    python benchmarks/stopping_rules.py [--problems 100] [--samples 16] [--seed 17]
        [--out runs/stopping-rules.jsonl] [--plot docs/adaptive-compute-replay.png]
    python benchmarks/stopping_rules.py --pooled docs/adaptive-compute-samples*.jsonl

The last column is an exact two-sided sign test (McNemar) on the problems won and lost against
self-consistency n=8.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from threadloom.data import load
from threadloom.evaluation.allocation import BatchBudget, split_priority, vote_settled
from threadloom.evaluation.bench import Verifiers, problem_seed, strategy_view
from threadloom.evaluation.plot import pyplot
from threadloom.evaluation.stats import mcnemar_exact, wilson_interval
from threadloom.orchestrator.context import RunContext
from threadloom.types import Problem, SamplingParams
from threadloom.verifiers.stopping import StopRule, settled, top_two
from threadloom.verifiers.voting import answer_key
from threadloom.workers.llamacpp.worker import LlamaCppWorker

DATASET = "arithmetic"


@dataclass(frozen=True)
class Sample:
    key: str | None
    correct: bool
    tokens: int
    mean_logprob: float


@dataclass(frozen=True)
class Drawn:
    problem_id: str
    samples: tuple[Sample, ...]


# ----- drawing ----------------------------------------------------------------------------


async def draw_one(
    problem: Problem, worker: LlamaCppWorker, verifiers: Verifiers, args: argparse.Namespace
) -> dict[str, object]:
    params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens)
    ctx = RunContext(
        strategy_view(problem), worker, params=params, seed=problem_seed(args.seed, problem.id)
    )
    candidates = await ctx.sample(args.samples, label="recorded", logprobs=0)
    grader = verifiers.grader(problem)
    samples = []
    for candidate in candidates:
        verdict = await grader.score(problem, candidate.model_copy(deep=True))
        samples.append(
            {
                "key": answer_key(candidate.answer, problem.answer_format),
                "correct": bool(verdict.passed),
                "tokens": candidate.completion_tokens,
                "mean_logprob": candidate.mean_logprob or 0.0,
            }
        )
    return {"problem_id": problem.id, "samples": samples}


async def draw(problems: list[Problem], args: argparse.Namespace, out: Path) -> None:
    done = {d.problem_id for d in read(out)}
    missing = [p for p in problems if p.id not in done]
    if not missing:
        return
    worker = LlamaCppWorker()
    verifiers = Verifiers(selection="none")
    lock = asyncio.Lock()
    queue = list(missing)

    async def lane() -> None:
        while queue:
            problem = queue.pop(0)
            row = await draw_one(problem, worker, verifiers, args)
            async with lock:
                with out.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
            print(f"drew {problem.id}", flush=True)

    try:
        # two problems at a time keep the worker's batch full while one finishes its tail
        await asyncio.gather(*(lane() for _ in range(args.lanes)))
    finally:
        await worker.close()


def read(path: Path) -> list[Drawn]:
    if not path.exists():
        return []
    drawn = []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            drawn.append(
                Drawn(row["problem_id"], tuple(Sample(**s) for s in row["samples"]))
            )
    return drawn


# ----- replaying ------------------------------------------------------------------------


def vote(samples: Sequence[Sample]) -> Sample | None:
    """The sample standing for the winning answer: most votes, then best mean log-prob."""
    groups: dict[str, list[Sample]] = {}
    for sample in samples:
        if sample.key is not None:
            groups.setdefault(sample.key, []).append(sample)
    if not groups:
        return None
    members = max(
        groups.values(), key=lambda g: (len(g), max(s.mean_logprob for s in g))
    )
    return members[0]


def weighted_vote(samples: Sequence[Sample]) -> Sample | None:
    """confidence-vote's `weighted` selection with `measure=mean`: each vote weighs
    exp(mean log-probability)."""
    weights: dict[str, float] = {}
    for sample in samples:
        if sample.key is not None:
            weights[sample.key] = weights.get(sample.key, 0.0) + math.exp(sample.mean_logprob)
    if not weights:
        return None
    best = max(weights, key=lambda key: weights[key])
    return next(s for s in samples if s.key == best)


def surest(samples: Sequence[Sample], share: float) -> list[Sample]:
    """confidence-vote's filter: the `share` of samples with the best mean log-probability."""
    count = max(1, math.ceil(share * len(samples)))
    return sorted(samples, key=lambda s: -s.mean_logprob)[:count]


Rule = Callable[[Sequence[str | None], int], bool]
"""(answers so far, samples still allowed) -> stop now."""


def rule_of(name: StopRule, *, confidence: float = 0.95, votes: int = 2) -> Rule:
    """The strategy's own stopping rule (adaptive-consistency's `settled`) as a replay rule."""

    def rule(answers: Sequence[str | None], remaining: int) -> bool:
        return settled(
            answers,
            rule=name,
            confidence=confidence,
            window=votes,
            remaining=remaining,
            votes=votes,
        )

    return rule


def giving_up(rule: Rule, after: int) -> Rule:
    """`rule`, or stop once `after` samples gave no answer twice (a problem taken as hopeless)."""

    def stop(answers: Sequence[str | None], remaining: int) -> bool:
        _, first, _ = top_two(answers)
        return rule(answers, remaining) or (len(answers) >= after and first <= 1)

    return stop


@dataclass
class Outcome:
    correct: int = 0
    covered: int = 0
    tokens: int = 0
    samples: int = 0
    problems: int = 0
    right: list[bool] = field(default_factory=list)
    """Per problem, in order: whether the vote was right (for paired comparisons)."""

    def add(
        self,
        taken: Sequence[Sample],
        tokens: int | None = None,
        voters: Sequence[Sample] | None = None,
        select: Callable[[Sequence[Sample]], Sample | None] = vote,
    ) -> None:
        """Count a problem that drew `taken`, spent `tokens` (theirs by default) and chose
        among `voters` (all of `taken` by default) with `select`."""
        chosen = select(taken if voters is None else voters)
        self.right.append(bool(chosen and chosen.correct))
        self.correct += bool(chosen and chosen.correct)
        self.covered += any(s.correct for s in taken)
        self.tokens += sum(s.tokens for s in taken) if tokens is None else tokens
        self.samples += len(taken)
        self.problems += 1

    def merge(self, other: Outcome) -> None:
        self.correct += other.correct
        self.covered += other.covered
        self.tokens += other.tokens
        self.samples += other.samples
        self.problems += other.problems
        self.right += other.right

    def against(self, baseline: Outcome) -> tuple[int, int]:
        """Problems this got right and the baseline wrong, and the other way round."""
        pairs = list(zip(self.right, baseline.right, strict=True))
        return sum(a and not b for a, b in pairs), sum(b and not a for a, b in pairs)


def fixed(drawn: list[Drawn], n: int) -> Outcome:
    outcome = Outcome()
    for d in drawn:
        outcome.add(d.samples[:n])
    return outcome


def confidence_voted(drawn: list[Drawn], n: int, keep: float | None) -> Outcome:
    """confidence-vote with `measure=mean`: weighted, or filtered to the surest `keep` share."""
    outcome = Outcome()
    for d in drawn:
        taken = d.samples[:n]
        voters = taken if keep is None else surest(taken, keep)
        outcome.add(taken, voters=voters, select=weighted_vote)
    return outcome


def adaptive(drawn: list[Drawn], rule: Rule, max_n: int, wave: int = 1) -> Outcome:
    """adaptive-consistency as it runs live: each wave of samples decodes in lockstep, so they
    finish shortest first; the rule is asked after every finished sample, and when it fires
    the rest of the wave is aborted, each having spent as many tokens as the last finisher."""
    outcome = Outcome()
    for d in drawn:
        taken: list[Sample] = []
        spent = 0
        stopped = False
        for start in range(0, min(max_n, len(d.samples)), wave):
            launched = list(d.samples[start : min(start + wave, max_n)])
            cutoff = max(s.tokens for s in launched)
            for sample in sorted(launched, key=lambda s: s.tokens):
                taken.append(sample)
                if rule([s.key for s in taken], max_n - len(taken)):
                    cutoff = sample.tokens
                    stopped = True
                    break
            spent += sum(min(s.tokens, cutoff) for s in launched)
            if stopped:
                break
        outcome.add(taken, tokens=spent)
    return outcome


def first_to_finish(drawn: list[Drawn], n: int, k: int) -> Outcome:
    """First-Finish: n samples decode in lockstep, the first k to end vote, the rest are
    aborted then (each having spent as many tokens as the k-th finisher)."""
    outcome = Outcome()
    for d in drawn:
        launched = list(d.samples[:n])
        finishers = sorted(launched, key=lambda s: s.tokens)[:k]
        cutoff = finishers[-1].tokens
        outcome.add(finishers, tokens=sum(min(s.tokens, cutoff) for s in launched))
    return outcome


def budgeted(drawn: list[Drawn], budget: int, probe: int, confidence: float, max_n: int) -> Outcome:
    """Probe every problem, then give one sample at a time to the open problem the batch
    budget's allocator ranks first (its own settling and priority rules)."""
    config = BatchBudget(
        budget_tokens=budget, probe=probe, max_per_problem=max_n, confidence=confidence
    )
    taken = {d.problem_id: list(d.samples[:probe]) for d in drawn}
    spent = sum(s.tokens for t in taken.values() for s in t)
    mean = spent / max(1, sum(len(t) for t in taken.values()))

    def priority(d: Drawn) -> float:
        keys = [s.key for s in taken[d.problem_id]]
        if len(keys) >= min(max_n, len(d.samples)) or vote_settled(keys, config):
            return -1.0
        return split_priority(keys, len(keys))

    while spent + mean <= budget:
        best = max(drawn, key=priority)
        if priority(best) <= 0:
            break
        sample = best.samples[len(taken[best.problem_id])]
        taken[best.problem_id].append(sample)
        spent += sample.tokens
    outcome = Outcome()
    for d in drawn:
        outcome.add(taken[d.problem_id])
    return outcome


def modes(drawn: list[Drawn], samples: int) -> list[tuple[str, Outcome]]:
    """Every mode replayed on `drawn`, each with its label."""
    rows: list[tuple[str, Outcome]] = []
    for n in (1, 2, 4, 6, 8, 10, 12, 16):
        if n <= samples:
            rows.append((f"self-consistency n={n}", fixed(drawn, n)))
    for n in (8, 16):
        for keep in (None, 0.5):
            if n <= samples:
                kind = "weighted" if keep is None else f"filtered to the surest {keep}"
                label = f"confidence-vote n={n}, mean log-prob, {kind}"
                rows.append((label, confidence_voted(drawn, n, keep)))
    for max_n in (8, 16):
        if max_n > samples:
            continue
        for confidence in (0.95, 0.8):
            label = f"adaptive max {max_n}, beta {confidence}"
            rows.append((label, adaptive(drawn, rule_of("beta", confidence=confidence), max_n)))
        for votes in (2, 3):
            label = f"adaptive max {max_n}, votes {votes}"
            rows.append((label, adaptive(drawn, rule_of("votes", votes=votes), max_n)))
        label = f"adaptive max {max_n}, window 3"
        rows.append((label, adaptive(drawn, rule_of("window", votes=3), max_n)))
        for after in (4, 6):
            label = f"adaptive max {max_n}, votes 2, give up after {after} distinct"
            rows.append((label, adaptive(drawn, giving_up(rule_of("votes"), after), max_n)))
    for max_n in (8, 16):
        for votes in (2, 3):
            if max_n <= samples:
                label = f"adaptive max {max_n}, one wave (finish order), votes {votes}"
                outcome = adaptive(drawn, rule_of("votes", votes=votes), max_n, wave=max_n)
                rows.append((label, outcome))
    for n in (6, 8, 10, 16):
        for k in (1, 2, 3, 4) if n == 8 else (2, 3, 4):
            if n <= samples:
                rows.append((f"first-finish n={n}, first {k} vote", first_to_finish(drawn, n, k)))
    for chunk in (5, len(drawn)):
        for probe in (2, 4):
            outcome = Outcome()
            for start in range(0, len(drawn), chunk):
                part = drawn[start : start + chunk]
                budget = fixed(part, min(8, samples)).tokens
                outcome.merge(budgeted(part, budget, probe, 0.85, samples))
            label = f"batch budget = sc8, {chunk} problems a batch, probe {probe}"
            rows.append((label, outcome))
    return rows


def baseline(rows: list[tuple[str, Outcome]]) -> Outcome:
    return dict(rows)["self-consistency n=8"]


def print_table(rows: list[tuple[str, Outcome]], title: str) -> None:
    sc8 = baseline(rows)
    table = Table(title=title)
    columns = ("mode", "accuracy (95% CI)", "coverage", "samples", "tokens/problem", "vs sc8",
               "right/wrong vs sc8", "p")
    for column in columns:
        table.add_column(column, justify="left" if column == "mode" else "right")
    for label, o in rows:
        low, high = wilson_interval(o.correct, o.problems)
        won, lost = o.against(sc8)
        table.add_row(
            label,
            f"{100 * o.correct / o.problems:.1f}% ({100 * low:.0f}-{100 * high:.0f})",
            f"{100 * o.covered / o.problems:.0f}%",
            f"{o.samples / o.problems:.1f}",
            f"{o.tokens / o.problems:.0f}",
            f"{o.tokens / sc8.tokens:.2f}",
            f"+{won} / -{lost}",
            f"{mcnemar_exact(won, lost):.3f}" if won + lost else "",
        )
    Console(width=170).print(table)


def report(drawn: list[Drawn], args: argparse.Namespace) -> None:
    rows = modes(drawn, args.samples)
    print_table(rows, f"replayed on {len(drawn)} problems x {args.samples} recorded samples")
    if args.plot:
        plot(rows, drawn, Path(args.plot), args.seed)


def pooled(paths: list[Path], samples: int) -> None:
    """Each draw replayed on its own (a batch budget never spans two draws), then summed."""
    total: dict[str, Outcome] = {}
    for path in paths:
        drawn = [d for d in read(path) if len(d.samples) >= samples]
        for label, outcome in modes(drawn, samples):
            total.setdefault(label, Outcome()).merge(outcome)
    problems = baseline(list(total.items())).problems
    title = f"replayed on {len(paths)} draws, {problems} problems x {samples} recorded samples"
    print_table(list(total.items()), title)


def plot(rows: list[tuple[str, Outcome]], drawn: list[Drawn], path: Path, seed: int) -> None:
    """Accuracy against tokens: self-consistency at every n as a curve, the rest as points."""
    plt = pyplot()
    fig, axis = plt.subplots(figsize=(11, 5.5))
    curve = [fixed(drawn, n) for n in range(1, len(drawn[0].samples) + 1)]
    axis.plot(
        [o.tokens / o.problems for o in curve],
        [100 * o.correct / o.problems for o in curve],
        marker=".",
        color="grey",
        label="self-consistency n=1..16",
    )
    markers = {"adaptive": "o", "batch": "s", "confidence-vote": "D"}
    shown = [(label, o) for label, o in rows if label.split()[0] in markers]
    colors = plt.get_cmap("tab20")
    for index, (label, o) in enumerate(shown):
        kind = label.split()[0]
        axis.plot(
            o.tokens / o.problems,
            100 * o.correct / o.problems,
            marker=markers[kind],
            linestyle="",
            color=colors(index % 20),
            label=label,
        )
    first_finish: dict[str, list[Outcome]] = {}
    for label, o in rows:
        if label.startswith("first-finish"):
            first_finish.setdefault(label.split(",")[0], []).append(o)
    for index, (name, outcomes) in enumerate(first_finish.items()):
        axis.plot(
            [o.tokens / o.problems for o in outcomes],
            [100 * o.correct / o.problems for o in outcomes],
            marker="^",
            linestyle=":",
            color=plt.get_cmap("Dark2")(index % 8),
            label=f"{name}, first 1-4 or 2-4 vote",
        )
    axis.set_xlabel("completion tokens per problem")
    axis.set_ylabel("accuracy (%)")
    axis.set_title(
        f"the same recorded samples, {len(drawn)} arithmetic problems (seed {seed}), SmolLM2-135M"
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--lanes", type=int, default=2, help="problems drawn at once")
    parser.add_argument("--out", default="runs/stopping-rules.jsonl")
    parser.add_argument("--plot", help="write accuracy against tokens to this PNG")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--pooled", nargs="+", metavar="JSONL", help="only print every mode summed over these draws"
    )
    args = parser.parse_args()
    if args.pooled:
        pooled([Path(p) for p in args.pooled], args.samples)
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    problems = load(DATASET, limit=args.problems, seed=args.seed)
    if not args.report_only:
        asyncio.run(draw(problems, args, out))
    wanted = {p.id for p in problems}
    drawn = [d for d in read(out) if d.problem_id in wanted and len(d.samples) >= args.samples]
    if drawn:
        report(drawn, args)


if __name__ == "__main__":
    main()
