"""run_bench on FakeWorker: failures contained, fingerprints enforced, the lock, compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from threadloom import FakeWorker, Problem
from threadloom.errors import ConfigError
from threadloom.evaluation.bench import Verifiers, run_bench
from threadloom.evaluation.compare import compare_runs
from threadloom.evaluation.fingerprint import make_fingerprint
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
            metadata={"verifier": "numeric"},
        )
        for i in range(1, count + 1)
    ]


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
