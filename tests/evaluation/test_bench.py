"""The evaluation harness on FakeWorker: grading, resume, contained failures, fingerprints,
the writer lock and paired comparison."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from threadloom import FakeWorker, Problem
from threadloom.errors import ConfigError
from threadloom.evaluation.bench import Verifiers, run_bench, strategy_view
from threadloom.evaluation.compare import compare_runs
from threadloom.evaluation.fingerprint import make_fingerprint
from threadloom.evaluation.plot import _error_bars, plot_scaling
from threadloom.evaluation.records import ResultLog
from threadloom.evaluation.stats import wilson_interval
from threadloom.evaluation.summary import summarize
from threadloom.strategies.registry import make_strategy
from threadloom.types import GenerationRequest, SamplingParams


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


def operand(request: GenerationRequest) -> int:
    return int(request.messages[-1].content.split()[2])


def right_worker() -> FakeWorker:
    return FakeWorker(lambda request, _: f"The answer is {2 * operand(request)}")


async def bench(log: ResultLog, worker: FakeWorker, strategy: str = "single", **kw: object):  # type: ignore[no-untyped-def]
    return await run_bench(
        problems(),
        [make_strategy(strategy)],
        worker,
        log,
        dataset="toy",
        verifiers=Verifiers(selection="none"),
        **kw,  # type: ignore[arg-type]
    )


async def test_a_non_threadloom_exception_is_recorded_and_the_bench_goes_on(
    tmp_path: Path,
) -> None:
    def reply(request: GenerationRequest, _: int) -> str:
        if operand(request) == 2:
            raise ValueError("scripted failure on p2")
        return f"The answer is {2 * operand(request)}"

    log = ResultLog(tmp_path / "r.jsonl")
    records = await bench(log, FakeWorker(reply))
    assert len(records) == 4
    on_disk = {r.problem_id: r for r in log.read()}
    assert set(on_disk) == {"p1", "p2", "p3", "p4"}
    assert on_disk["p2"].error == "ValueError: scripted failure on p2"
    assert all(on_disk[p].correct for p in ("p1", "p3", "p4"))
    (summary,) = summarize(records)
    # accuracy over all four problems, the failed one counted wrong, and shown on its own
    assert (summary.problems, summary.errors, summary.correct) == (4, 1, 3)
    assert summary.accuracy == 0.75
    assert summary.accuracy_ci == wilson_interval(3, 4)
    # the failed problem is retried on resume, and only it
    worker = right_worker()
    again = await bench(log, worker)
    assert [r.problem_id for r in again] == ["p2"] and len(worker.requests) == 1
    assert summarize(log.read())[0].accuracy == 1.0


async def test_a_degenerate_huge_number_answer_does_not_end_the_bench(tmp_path: Path) -> None:
    def reply(request: GenerationRequest, _: int) -> str:
        if operand(request) == 3:
            return "The answer is " + "7" * 400
        return f"The answer is {2 * operand(request)}"

    log = ResultLog(tmp_path / "r.jsonl")
    records = await bench(log, FakeWorker(reply))
    by = {r.problem_id: r for r in records}
    assert set(by) == {"p1", "p2", "p3", "p4"}
    assert not by["p3"].correct
    assert summarize(records)[0].correct == 3


async def test_a_long_error_message_is_cut(tmp_path: Path) -> None:
    def reply(request: GenerationRequest, _: int) -> str:
        raise RuntimeError("x" * 100_000)

    log = ResultLog(tmp_path / "r.jsonl")
    records = await bench(log, FakeWorker(reply))
    assert all(r.error is not None and len(r.error) <= 500 for r in records)
    assert all(len(line) < 2_000 for line in log.path.read_text().splitlines())


async def test_resume_with_another_configuration_is_refused(tmp_path: Path) -> None:
    log = ResultLog(tmp_path / "r.jsonl")
    first = make_fingerprint(
        worker=("fake", "model-a"), params=None, verifier="none", dataset={"seed": 0}
    )
    await bench(log, right_worker(), fingerprint=first)
    before = log.path.read_bytes()
    wrong = FakeWorker(["I do not know"])
    other = first.model_copy(update={"model": "model-b"})
    with pytest.raises(ConfigError, match='model: "model-a" → "model-b"'):
        await bench(log, wrong, fingerprint=other)
    assert log.path.read_bytes() == before and wrong.requests == []
    # the default fingerprint follows the sampling parameters
    with pytest.raises(ConfigError, match=r"sampling\.temperature"):
        await bench(log, wrong, params=SamplingParams(temperature=0.1))
    assert log.path.read_bytes() == before and wrong.requests == []


async def test_records_carry_the_fingerprint(tmp_path: Path) -> None:
    log = ResultLog(tmp_path / "r.jsonl")
    await bench(log, right_worker(), params=SamplingParams(max_tokens=64), seed=3)
    stored = json.loads(log.path.read_text().splitlines()[0])["fingerprint"]
    assert stored["worker"] == "fake" and stored["model"] == "fake"
    assert stored["sampling"]["max_tokens"] == 64
    assert stored["dataset"] == {"seed": 3}
    assert stored["verifier"] == "none" and stored["version"]


async def test_dataset_options_enter_the_default_fingerprint(tmp_path: Path) -> None:
    log = ResultLog(tmp_path / "r.jsonl")
    await bench(log, right_worker(), dataset_options={"difficulty": 1})
    before = log.path.read_bytes()
    worker = right_worker()
    with pytest.raises(ConfigError, match=r"dataset\.difficulty: 1 → 2"):
        await bench(log, worker, dataset_options={"difficulty": 2})
    assert log.path.read_bytes() == before and worker.requests == []


async def test_a_second_writer_does_no_work(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    holder = ResultLog(path)
    worker = right_worker()
    with holder.lock(), pytest.raises(ConfigError, match="another bench"):
        await bench(ResultLog(path), worker)
    assert worker.requests == [] and not path.exists()


async def test_compare_pairs_the_problems(tmp_path: Path) -> None:
    def wrong_on(odd: bool):  # type: ignore[no-untyped-def]
        def reply(request: GenerationRequest, _: int) -> str:
            a = operand(request)
            return f"The answer is {2 * a + (1 if (a % 2 == 1) == odd else 0)}"

        return FakeWorker(reply)

    a_log, b_log = ResultLog(tmp_path / "a.jsonl"), ResultLog(tmp_path / "b.jsonl")
    await bench(a_log, wrong_on(odd=True))  # right on p2, p4
    await bench(b_log, right_worker())  # right on all
    result = compare_runs(a_log.path, b_log.path)
    assert result.shared == 4
    accuracy = result.metrics[0]
    assert (accuracy.first, accuracy.second) == (0.5, 1.0)
    assert (accuracy.both, accuracy.only_first, accuracy.only_second, accuracy.neither) == (
        2,
        0,
        2,
        0,
    )
    assert accuracy.p_value == pytest.approx(0.5)
    assert accuracy.difference == 0.5
    assert result.settings_differ == []  # both FakeWorkers with the same default fingerprint


async def test_compare_refuses_runs_without_shared_problems(tmp_path: Path) -> None:
    a_log, b_log = ResultLog(tmp_path / "a.jsonl"), ResultLog(tmp_path / "b.jsonl")
    await bench(a_log, right_worker(), seed=1)
    await bench(b_log, right_worker(), seed=2)
    with pytest.raises(ConfigError, match="share no problem"):
        compare_runs(a_log.path, b_log.path)


async def test_compare_needs_a_strategy_when_a_file_holds_several(tmp_path: Path) -> None:
    log = ResultLog(tmp_path / "r.jsonl")
    await bench(log, right_worker(), strategy="single")
    await bench(log, right_worker(), strategy="best-of-n:n=2")
    with pytest.raises(ConfigError, match="several strategies"):
        compare_runs(log.path, log.path)
    result = compare_runs(
        log.path, log.path, first_strategy="single", second_strategy="best-of-n:n=2"
    )
    assert result.first.strategy == "single" and result.second.strategy == "best-of-n:n=2"
    assert result.metrics[0].difference == 0.0
