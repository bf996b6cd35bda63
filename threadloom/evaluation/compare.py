"""Paired comparison of two bench runs on the problems both ran: exact McNemar, paired bootstrap."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from threadloom.errors import ConfigError
from threadloom.evaluation.fingerprint import RunFingerprint
from threadloom.evaluation.records import BenchRecord, ResultLog
from threadloom.evaluation.sanitize import scrub_text
from threadloom.evaluation.stats import mcnemar_exact, paired_bootstrap_interval
from threadloom.evaluation.summary import latest_records

ProblemKey = tuple[str, str, int]
"""(dataset, problem id, per-problem seed): the same problem under the same sampling seed."""


class ComparedRun(BaseModel):
    """One side of a comparison: a strategy's records in one results file."""

    model_config = ConfigDict(extra="forbid")

    path: str
    strategy: str
    problems: int
    """Problems this side has records for (shared or not)."""
    errors: int
    """Shared problems that failed with an error (counted as wrong)."""
    fingerprint: str | None
    """Digest of the configuration that produced the records; None for unmarked records."""


class PairedMetric(BaseModel):
    """One outcome (accuracy or coverage) compared problem by problem."""

    model_config = ConfigDict(extra="forbid")

    metric: str
    first: float
    second: float
    difference: float
    """second - first, over the shared problems."""
    difference_ci: tuple[float, float]
    """Paired bootstrap 95% interval of the difference (10 000 resamples, seed 0)."""
    both: int
    only_first: int
    only_second: int
    neither: int
    p_value: float
    """Two-sided exact McNemar test on the discordant problems."""


class Comparison(BaseModel):
    """Two runs compared on the problems both ran."""

    model_config = ConfigDict(extra="forbid")

    first: ComparedRun
    second: ComparedRun
    shared: int
    """Problems both runs have a record for; only these are compared."""
    settings_differ: list[str]
    """How the two configurations differ ('field: first → second'); empty when they match."""
    metrics: list[PairedMetric]


@dataclass(frozen=True)
class _Side:
    path: Path
    strategy: str
    records: dict[ProblemKey, BenchRecord]
    fingerprint: RunFingerprint | None


def _pick_strategy(path: Path, labels: list[str], wanted: str | None, option: str) -> str:
    if wanted is not None:
        if wanted not in labels:
            raise ConfigError(
                f"{path} has no results of strategy {wanted!r}; it holds: {', '.join(labels)}"
            )
        return wanted
    if len(labels) != 1:
        raise ConfigError(
            f"{path} holds results of several strategies ({', '.join(labels)}); choose one "
            f"with {option} LABEL"
        )
    return labels[0]


def _load_side(path: Path, wanted: str | None, option: str) -> _Side:
    if not path.is_file():
        raise ConfigError(f"results file not found: {path} (write one with bench --out)")
    records = latest_records(ResultLog(path).read())
    labels = list(dict.fromkeys(r.strategy for r in records))
    if not labels:
        raise ConfigError(f"{path} holds no complete records")
    strategy = _pick_strategy(path, labels, wanted, option)
    mine = [r for r in records if r.strategy == strategy]
    fingerprints = {r.fingerprint.digest() if r.fingerprint else None for r in mine}
    if len(fingerprints) > 1:
        raise ConfigError(
            f"{path} mixes results of {len(fingerprints)} configurations for {strategy!r}; "
            "compare files written by one bench configuration each"
        )
    return _Side(
        path=path,
        strategy=strategy,
        records={(r.dataset, r.problem_id, r.seed): r for r in mine},
        fingerprint=mine[0].fingerprint,
    )


def _paired(metric: str, first: list[bool], second: list[bool]) -> PairedMetric:
    pairs = list(zip(first, second, strict=True))
    only_first = sum(a and not b for a, b in pairs)
    only_second = sum(b and not a for a, b in pairs)
    count = len(pairs)
    return PairedMetric(
        metric=metric,
        first=sum(first) / count,
        second=sum(second) / count,
        difference=(sum(second) - sum(first)) / count,
        difference_ci=paired_bootstrap_interval(first, second),
        both=sum(a and b for a, b in pairs),
        only_first=only_first,
        only_second=only_second,
        neither=sum(not a and not b for a, b in pairs),
        p_value=mcnemar_exact(only_first, only_second),
    )


def compare_runs(
    first: Path,
    second: Path,
    *,
    first_strategy: str | None = None,
    second_strategy: str | None = None,
) -> Comparison:
    """Compare two strategies' results on the problems both files have, pairing by problem.

    A problem pairs when dataset, problem id and per-problem seed agree. A failed problem
    counts as wrong, as in the bench summary.

    Args:
        first: A results file written by `threadloom bench --out`.
        second: Another (or the same) results file.
        first_strategy: The strategy label to take from `first`; needed when it holds several.
        second_strategy: Likewise for `second`.

    Raises:
        ConfigError: A file is missing, empty, mixes configurations, lacks the strategy, or
            the two share no problem.
    """
    a = _load_side(first, first_strategy, "--first-strategy")
    b = _load_side(second, second_strategy, "--second-strategy")
    if a.path.resolve() == b.path.resolve() and a.strategy == b.strategy:
        raise ConfigError(
            f"both sides are {a.strategy!r} in {a.path}; choose two strategies with "
            "--first-strategy and --second-strategy"
        )
    shared = sorted(a.records.keys() & b.records.keys())
    if not shared:
        raise ConfigError(
            f"{a.path} ({a.strategy}) and {b.path} ({b.strategy}) share no problem (same "
            "dataset, problem id and seed); run both on the same dataset and --seed"
        )
    if a.fingerprint is not None and b.fingerprint is not None:
        differ = a.fingerprint.differences(b.fingerprint)
    elif a.fingerprint is None and b.fingerprint is None:
        differ = ["fingerprint: unknown on both sides (records written without one)"]
    else:
        differ = ["fingerprint: unknown on one side (records written without one)"]
    first_rows = [a.records[key] for key in shared]
    second_rows = [b.records[key] for key in shared]

    def side(s: _Side, rows: list[BenchRecord]) -> ComparedRun:
        return ComparedRun(
            path=scrub_text(str(s.path)),
            strategy=s.strategy,
            problems=len(s.records),
            errors=sum(r.error is not None for r in rows),
            fingerprint=s.fingerprint.digest() if s.fingerprint else None,
        )

    return Comparison(
        first=side(a, first_rows),
        second=side(b, second_rows),
        shared=len(shared),
        settings_differ=differ,
        metrics=[
            _paired(
                "accuracy",
                [r.error is None and r.correct for r in first_rows],
                [r.error is None and r.correct for r in second_rows],
            ),
            _paired(
                "coverage",
                [r.error is None and r.covered for r in first_rows],
                [r.error is None and r.covered for r in second_rows],
            ),
        ],
    )
