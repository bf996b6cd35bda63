"""The evaluation harness on FakeWorker: grading, coverage, JSONL streaming and resume."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from threadloom import FakeWorker, Problem
from threadloom.evaluation.bench import Verifiers, run_bench, strategy_view
from threadloom.evaluation.plot import _error_bars, plot_scaling
from threadloom.evaluation.records import ResultLog
from threadloom.evaluation.summary import summarize
from threadloom.strategies.registry import make_strategy


def problems(count: int = 4) -> list[Problem]:
    return [
        Problem(
            prompt=f"What is {i} + {i}?",
            reference=str(2 * i),
            answer_format="number",
            id=f"p{i}",
            metadata={"verifier": "numeric", "solution": "secret"},
        )
        for i in range(1, count + 1)
    ]


def doubling_worker(token_delay_s: float = 0.0) -> FakeWorker:
    """Answers correctly on every third call, otherwise off by one."""

    def reply(request, index):  # type: ignore[no-untyped-def]
        question = request.messages[-1].content
        a = int(question.split()[2])
        return f"The answer is {2 * a if index % 3 == 0 else 2 * a + 1}"

    return FakeWorker(reply, token_delay_s=token_delay_s)


def test_strategy_view_hides_reference_and_grading_fields() -> None:
    view = strategy_view(problems(1)[0])
    assert view.reference is None
    assert "solution" not in view.metadata
    assert view.metadata["verifier"] == "numeric"


async def test_bench_grades_accuracy_and_coverage(tmp_path: Path) -> None:
    log = ResultLog(tmp_path / "r.jsonl")
    strategies = [make_strategy("single"), make_strategy("best-of-n:n=3")]
    records = await run_bench(
        problems(),
        strategies,
        doubling_worker(),
        log,
        dataset="toy",
        verifiers=Verifiers(selection="none"),
        concurrency=1,
    )
    assert len(records) == 8
    by = {s.strategy: s for s in summarize(records)}
    # best-of-3 always draws one correct sample: full coverage
    assert by["best-of-n:n=3"].coverage == 1.0
    assert by["best-of-n:n=3"].mean_generations == 3
    assert by["single"].mean_generations == 1
    assert all(r.reference is not None for r in records)
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert len(lines) == 8


async def test_rerun_resumes_without_redoing(tmp_path: Path) -> None:
    log = ResultLog(tmp_path / "r.jsonl")
    strategies = [make_strategy("single")]
    worker = doubling_worker()
    first = await run_bench(
        problems(), strategies, worker, log, dataset="toy", verifiers=Verifiers(selection="none")
    )
    calls = len(worker.requests)
    again = await run_bench(
        problems(), strategies, worker, log, dataset="toy", verifiers=Verifiers(selection="none")
    )
    assert len(first) == 4 and again == []
    assert len(worker.requests) == calls


async def test_interrupted_run_keeps_finished_problems(tmp_path: Path) -> None:
    log = ResultLog(tmp_path / "r.jsonl")
    strategies = [make_strategy("single")]
    slow = FakeWorker(["one two three four five 4"], token_delay_s=0.02)
    task = asyncio.create_task(
        run_bench(
            problems(6),
            strategies,
            slow,
            log,
            dataset="toy",
            verifiers=Verifiers(selection="none"),
            concurrency=1,
        )
    )
    while len(log.read()) < 2:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    kept = log.read()
    assert 2 <= len(kept) < 6
    # a torn last line from a crash mid-write is ignored
    with log.path.open("a") as handle:
        handle.write('{"dataset": "toy", "problem_')
    rest = await run_bench(
        problems(6),
        strategies,
        doubling_worker(),
        log,
        dataset="toy",
        verifiers=Verifiers(selection="none"),
    )
    assert len(rest) == 6 - len(kept)
    assert {r.problem_id for r in log.read()} == {f"p{i}" for i in range(1, 7)}


async def test_failed_problems_are_recorded_and_retried(tmp_path: Path) -> None:
    log = ResultLog(tmp_path / "r.jsonl")
    bad = [Problem(prompt="q", id="nov", metadata={})]  # names no grader
    records = await run_bench(
        bad,
        [make_strategy("single")],
        FakeWorker(["1"]),
        log,
        dataset="toy",
        verifiers=Verifiers(selection="none"),
    )
    assert records[0].error is not None and "verifier" in records[0].error
    assert log.done_keys() == set()
    assert summarize(records)[0].errors == 1


async def test_plot_is_written(tmp_path: Path) -> None:
    log = ResultLog(tmp_path / "r.jsonl")
    strategies = [make_strategy(s) for s in ("single", "best-of-n:n=2", "best-of-n:n=4")]
    records = await run_bench(
        problems(),
        strategies,
        doubling_worker(),
        log,
        dataset="toy",
        verifiers=Verifiers(selection="auto"),
    )
    summaries = summarize(records)
    path = plot_scaling(summaries, tmp_path / "scaling.png", title="toy $x")
    assert path.stat().st_size > 10_000
    # error bars span each point's Wilson interval
    values = [100 * s.accuracy for s in summaries]
    below, above = _error_bars(values, [s.accuracy_ci for s in summaries])
    for s, value, down, up in zip(summaries, values, below, above, strict=True):
        low, high = s.accuracy_ci
        assert value - down == pytest.approx(100 * low) and value + up == pytest.approx(100 * high)
