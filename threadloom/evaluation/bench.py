"""Run strategies over a dataset: concurrent, graded, streamed to JSONL, resumable."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from threadloom.errors import ConfigError
from threadloom.evaluation.fingerprint import RunFingerprint, describe_worker, make_fingerprint
from threadloom.evaluation.occupancy import SlotGate
from threadloom.evaluation.records import BenchRecord, ResultLog
from threadloom.evaluation.sanitize import scrub_text
from threadloom.orchestrator.runner import arun
from threadloom.strategies.base import Strategy
from threadloom.types import Candidate, Problem, Result, SamplingParams
from threadloom.verifiers.base import Verifier
from threadloom.verifiers.registry import make_verifier
from threadloom.workers.base import Worker

logger = logging.getLogger(__name__)

HIDDEN_METADATA = frozenset({"test", "tests", "canonical_solution", "solution", "expression"})
"""Problem fields used for grading only; strategies never see them."""

SELECTION_DEFAULTS = {"numeric": "numeric", "math": "math", "game24": "game24", "rules": "rules"}
"""Reference-free selection verifier for each grader ('auto'); code has none (its tests are
hidden), so code strategies rank by log-probability unless given a verifier."""

ERROR_CHARS = 500
"""How much of a failed problem's error message a record keeps."""

MIN_PROBLEMS_AT_ONCE = 4
"""Problems run together when the worker's slot count suggests fewer."""


def problem_seed(seed: int, problem_id: str) -> int:
    digest = hashlib.sha256(f"{seed}:{problem_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def record_key(
    dataset: str, problem: Problem, strategy: Strategy | str, seed: int
) -> tuple[str, str, str, int]:
    """The key a record of this run would have (`BenchRecord.key`), text scrubbed alike;
    `strategy` may be given by its label."""
    label = strategy if isinstance(strategy, str) else strategy.label()
    return (
        scrub_text(dataset),
        scrub_text(problem.id),
        scrub_text(label),
        problem_seed(seed, problem.id),
    )


def strategy_view(problem: Problem) -> Problem:
    """The problem as a strategy under evaluation sees it: no reference, no hidden tests."""
    metadata = {k: v for k, v in problem.metadata.items() if k not in HIDDEN_METADATA}
    return problem.model_copy(update={"reference": None, "metadata": metadata})


@dataclass
class Verifiers:
    """Graders and selection verifiers, created once per name and shared by all problems."""

    selection: str | None
    """'auto', 'none', or a verifier spec."""
    sandbox: str | None = None
    """Isolation of the 'code' verifier ('bwrap' or 'guards'); None for its default."""

    def __post_init__(self) -> None:
        self._cache: dict[str, Verifier] = {}

    def get(self, spec: str) -> Verifier:
        if spec == "code" and self.sandbox is not None:
            spec = f"code:{self.sandbox}"
        if spec not in self._cache:
            self._cache[spec] = make_verifier(spec)
        return self._cache[spec]

    def grader(self, problem: Problem) -> Verifier:
        name = problem.metadata.get("verifier")
        if not isinstance(name, str):
            raise ConfigError(
                f"problem {problem.id!r} does not name its verifier (metadata['verifier']); "
                "pass --grader NAME for a custom dataset"
            )
        return self.get(name)

    def for_selection(self, problem: Problem) -> Verifier | None:
        if self.selection in (None, "none"):
            return None
        if self.selection == "auto":
            default = SELECTION_DEFAULTS.get(str(problem.metadata.get("verifier")))
            return self.get(default) if default else None
        return self.get(self.selection)

    def close(self) -> None:
        for verifier in self._cache.values():
            close = getattr(verifier, "close", None)
            if callable(close):
                close()


async def grade(problem: Problem, result: Result, grader: Verifier) -> tuple[bool, bool]:
    """(chosen answer correct, any candidate correct), judged with the reference."""

    async def ok(candidate: Candidate) -> bool:
        copy = candidate.model_copy(deep=True)
        return bool((await grader.score(problem, copy)).passed)

    verdicts = await asyncio.gather(*(ok(c) for c in result.candidates))
    correct = bool(verdicts) and verdicts[0]
    return correct, any(verdicts)


def describe_error(exc: BaseException) -> str:
    """'Type: message' of a failed problem, cut to ERROR_CHARS (messages may quote model text)."""
    try:
        message = str(exc)
    except Exception:  # a hostile __str__ must not end the bench either
        message = "(message unavailable)"
    text = f"{type(exc).__name__}: {message}"
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."


async def run_bench(
    problems: Sequence[Problem],
    strategies: Sequence[Strategy],
    worker: Worker,
    log: ResultLog,
    *,
    dataset: str,
    verifiers: Verifiers,
    params: SamplingParams | None = None,
    seed: int = 0,
    concurrency: int | None = None,
    on_record: Callable[[BenchRecord], None] | None = None,
    fingerprint: RunFingerprint | None = None,
    dataset_options: Mapping[str, Any] | None = None,
) -> list[BenchRecord]:
    """Run every strategy on every problem not already in the log; return the new records.

    Up to `concurrency` (problem, strategy) pairs run at once (default: as many as the worker
    has batch slots, at least 4), and their generations share the worker's slots first come
    first served (`SlotGate`): a slot freed by any sample goes to the next waiting one, so the
    batch stays full while a problem waits for its slowest sample.
    Each record is appended to the log as soon as it is graded, so an interruption loses
    nothing that finished. A problem that raises anything (an Exception, not a cancellation)
    is recorded with its error, counts as wrong, and is retried next time; the others go on.

    The log is locked for the whole run, and every record carries `fingerprint` (by default
    one built from the worker, `params`, the selection verifier, `seed` and `dataset_options`:
    pass what chose the problems, such as a generator's difficulty, so that a log of other
    problems under the same ids is refused).

    Raises:
        ConfigError: Bad concurrency; another writer holds the log; or the log holds records
            of another fingerprint (the message says what differs).
    """
    if concurrency is not None and concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
    gate = worker if isinstance(worker, SlotGate) else SlotGate(worker)
    problems_at_once = concurrency or max(MIN_PROBLEMS_AT_ONCE, gate.slots)
    if fingerprint is None:
        fingerprint = make_fingerprint(
            worker=describe_worker(worker),
            params=params,
            verifier=verifiers.selection,
            dataset={"seed": seed, **(dataset_options or {})},
        )
    with log.lock():
        log.check_fingerprint(fingerprint)
        done = log.done_keys()
        admitted = asyncio.Semaphore(problems_at_once)
        new: list[BenchRecord] = []

        async def one(problem: Problem, strategy: Strategy) -> None:
            record = BenchRecord(
                dataset=dataset,
                problem_id=problem.id,
                strategy=strategy.label(),
                seed=problem_seed(seed, problem.id),
                reference=problem.reference,
                fingerprint=fingerprint,
            )
            async with admitted:
                await _solve(problem, strategy, gate, verifiers, params, record)
            log.append(record)
            new.append(record)
            if on_record is not None:
                on_record(record)

        await asyncio.gather(
            *(
                one(problem, strategy)
                for problem in problems
                for strategy in strategies
                if record_key(dataset, problem, strategy, seed) not in done
            )
        )
    return new


async def _solve(
    problem: Problem,
    strategy: Strategy,
    worker: Worker,
    verifiers: Verifiers,
    params: SamplingParams | None,
    record: BenchRecord,
) -> None:
    """Run and grade one (problem, strategy) pair into `record`; any failure becomes its error."""
    started = time.perf_counter()
    try:
        result = await arun(
            strategy_view(problem),
            strategy,
            worker=worker,
            verifier=verifiers.for_selection(problem),
            params=params,
            seed=record.seed,
        )
        correct, covered = await grade(problem, result, verifiers.grader(problem))
    except Exception as exc:
        record.error = describe_error(exc)
        record.wall_time_s = time.perf_counter() - started
        logger.warning("%s on %s failed: %s", record.strategy, problem.id, record.error)
        return
    usage = result.usage
    record.answer = result.answer
    record.correct = correct
    record.covered = covered
    record.candidates = len(result.candidates)
    record.truncated = result.truncated
    record.generations = usage.generations
    record.prompt_tokens = usage.prompt_tokens
    record.cached_prompt_tokens = usage.cached_prompt_tokens
    record.completion_tokens = usage.completion_tokens
    record.verifier_calls = usage.verifier_calls
    record.wall_time_s = usage.wall_time_s
    record.extra.update(stopping_point(result))


def stopping_point(result: Result) -> dict[str, Any]:
    """Where an adaptive strategy stopped sampling (its 'stop' trace node), for the record."""
    for node in result.trace.nodes:
        if node.kind == "stop":
            keys = ("stopped_after", "launched", "aborted", "stop_reason", "max_n")
            return {k: node.data[k] for k in keys if k in node.data}
    return {}


def pending_count(
    problems: Sequence[Problem],
    strategies: Sequence[Strategy],
    log: ResultLog,
    dataset: str,
    seed: int,
) -> int:
    done = log.done_keys()
    return sum(record_key(dataset, p, s, seed) not in done for p in problems for s in strategies)
