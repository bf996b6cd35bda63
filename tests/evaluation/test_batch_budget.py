"""One token budget over a batch of problems, the slot gate that keeps the batch full, and
stopping points in bench records; on scripted workers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from threadloom import FakeWorker, Problem
from threadloom.evaluation.allocation import BatchBudget, allocate, run_budget_bench
from threadloom.evaluation.bench import Verifiers, run_bench
from threadloom.evaluation.difficulty import by_difficulty
from threadloom.evaluation.fingerprint import make_fingerprint
from threadloom.evaluation.occupancy import SlotGate
from threadloom.evaluation.records import ResultLog
from threadloom.strategies.registry import make_strategy
from threadloom.types import GenerationRequest, SamplingParams

PARAMS = SamplingParams(max_tokens=8)


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


def settled_or_split(request: GenerationRequest, index: int) -> str:
    """Problems 1 and 2 always get the right answer; 3 and 4 get a different one each time."""
    a = int(request.messages[-1].content.split()[2])  # type: ignore[index]
    answer = 2 * a if a <= 2 else 2 * a + index % 5
    return f"The answer is {answer}"


class PeakInFlight:
    """Watches a FakeWorker's running requests while a block runs."""

    def __init__(self, worker: FakeWorker) -> None:
        self.worker = worker
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        while True:
            self.peak = max(self.peak, self.worker.in_flight)
            await asyncio.sleep(0.002)

    async def __aenter__(self) -> PeakInFlight:
        self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def test_settled_problems_get_only_their_probes() -> None:
    worker = FakeWorker(settled_or_split)
    config = BatchBudget(budget_tokens=96, probe=2, max_per_problem=32)
    states = await allocate(problems(), worker, config, params=PARAMS, seed=1)
    samples = [len(s.candidates) for s in states]
    assert samples[:2] == [2, 2]
    assert samples[2] > 2 and samples[3] > 2
    spent = sum(s.ctx.usage.completion_tokens for s in states)
    assert spent <= 96
    assert worker.tokens_emitted == spent
    # the budget went nearly all to the split problems: within one sample of the limit
    assert spent > 96 - 2 * 4


async def test_budget_smaller_than_the_probes_stops_early() -> None:
    worker = FakeWorker(settled_or_split)
    config = BatchBudget(budget_tokens=12, probe=2)
    states = await allocate(problems(), worker, config, params=PARAMS)
    # until four samples have finished each is expected to use its whole cap (8 tokens)
    assert sum(len(s.candidates) for s in states) == 2
    assert worker.tokens_emitted <= 12


async def test_long_samples_never_take_the_batch_past_its_budget() -> None:
    worker = FakeWorker(lambda request, index: "word " * (5 + 7 * (index % 4)) + f"{index}")
    config = BatchBudget(budget_tokens=150, probe=2)
    states = await allocate(problems(), worker, config, params=SamplingParams(max_tokens=40))
    spent = sum(s.ctx.usage.completion_tokens for s in states)
    assert worker.tokens_emitted == spent <= 150
    # the last samples were cut to what the budget still held, so it is spent nearly whole
    assert spent > 150 - 40


async def test_budget_bench_records_samples_and_difficulty(tmp_path: Path) -> None:
    log = ResultLog(tmp_path / "r.jsonl")
    config = BatchBudget(budget_tokens=96, probe=2)
    fingerprint = make_fingerprint(worker=("fake", "fake"), params=PARAMS, verifier="none",
                                   dataset={"seed": 0})
    verifiers = Verifiers(selection="none")
    records = await run_budget_bench(problems(), FakeWorker(settled_or_split), log, config,
                                     dataset="toy", verifiers=verifiers,
                                     fingerprint=fingerprint, params=PARAMS)
    assert [r.correct for r in records[:2]] == [True, True]
    assert [r.extra["samples"] for r in records[:2]] == [2, 2]
    assert all(r.extra["difficulty"] == "easy" for r in records[:2])
    rows = {row.difficulty: row for row in by_difficulty(records)}
    assert rows["easy"].mean_samples == 2
    assert len(rows) > 1
    assert all(row.mean_samples > 2 for name, row in rows.items() if name != "easy")
    # a rerun finds every problem done and samples nothing
    again = FakeWorker(settled_or_split)
    assert await run_budget_bench(problems(), again, log, config, dataset="toy",
                                  verifiers=verifiers, fingerprint=fingerprint,
                                  params=PARAMS) == []
    assert again.requests == []


async def test_slot_gate_caps_the_batch_and_drops_aborted_waiters() -> None:
    worker = FakeWorker(["one two three four five six"], token_delay_s=0.01)
    gate = SlotGate(worker, slots=2)
    requests = [GenerationRequest(text=f"q{i}") for i in range(5)]
    async with PeakInFlight(worker) as watch:
        tasks = [asyncio.create_task(gate.generate(r)) for r in requests]
        await asyncio.sleep(0.02)
        assert await gate.abort(requests[4].request_id)
        done = await asyncio.gather(*tasks)
    assert watch.peak == 2
    assert done[4].finish_reason == "abort" and done[4].usage.completion_tokens == 0
    assert requests[4].request_id not in {r.request_id for r in worker.requests}
    assert [c.finish_reason for c in done[:4]] == ["stop"] * 4
    assert 1.0 < gate.busy_occupancy() <= 2.0


async def test_bench_fills_freed_slots_with_other_problems_samples(tmp_path: Path) -> None:
    def reply(request: GenerationRequest, index: int) -> str:
        a = int(request.messages[-1].content.split()[2])  # type: ignore[index]
        slow = a == 1 and index == 0
        return ("hmm " * 40 if slow else "") + f"The answer is {2 * a}"

    worker = FakeWorker(reply, token_delay_s=0.005)
    finished: list[str] = []
    async with PeakInFlight(worker) as watch:
        await run_bench(
            problems(3), [make_strategy("self-consistency:n=4")], SlotGate(worker, slots=4),
            ResultLog(tmp_path / "r.jsonl"), dataset="toy", verifiers=Verifiers(selection="none"),
            on_record=lambda r: finished.append(r.problem_id),
        )
    # problem 1 holds one slot with its slow sample; the others' samples use the rest
    assert finished[-1] == "p1"
    assert watch.peak == 4


async def test_bench_records_where_adaptive_sampling_stopped(tmp_path: Path) -> None:
    records = await run_bench(
        problems(2), [make_strategy("adaptive-consistency:max_n=16,wave=4")],
        FakeWorker(["The answer is 2"]), ResultLog(tmp_path / "r.jsonl"), dataset="toy",
        verifiers=Verifiers(selection="none"),
    )
    assert [r.extra["stopped_after"] for r in records] == [4, 4]
    assert all(r.extra["stop_reason"] == "settled" and r.generations == 4 for r in records)


def test_cli_budget_tokens_spends_nothing_on_settled_problems(tmp_path: Path) -> None:
    data = tmp_path / "fours.jsonl"
    data.write_text("".join(json.dumps({"q": f"Q{i}: 2 + 2?", "a": "4"}) + "\n" for i in range(5)))
    out = tmp_path / "r.jsonl"
    run = subprocess.run(
        [sys.executable, "-m", "threadloom.cli", "bench", "--dataset", str(data), "--field", "q",
         "--answer-field", "a", "--worker", "fake:The answer is 4", "--out", str(out),
         "--budget-tokens", "400", "--max-tokens", "16", "--json"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"},
    )
    assert run.returncode == 0, run.stderr
    payload = json.loads(run.stdout)
    [summary] = payload["strategies"]
    assert summary["strategy"].startswith("batch-budget:tokens=400")
    assert summary["problems"] == 5 and summary["accuracy"] == 1.0
    assert summary["mean_generations"] == 2
    assert payload["by_difficulty"][0]["difficulty"] == "easy"
    assert len(out.read_text().splitlines()) == 5


def test_embedded_worker_default_slots_fit_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from threadloom.workers.llamacpp import worker as llamacpp

    for cores, slots in ((1, 8), (2, 16), (3, 24), (16, 32)):
        monkeypatch.setattr(llamacpp.os, "sched_getaffinity", lambda _, c=cores: set(range(c)))
        assert llamacpp.default_slots() == slots
