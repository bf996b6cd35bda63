"""Graph strategies end to end on the real bundled model, and the graph/trace commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import threadloom as tl
from threadloom.orchestrator.plan import StrategyGraph
from threadloom.workers.llamacpp.worker import LlamaCppWorker

PARAMS = tl.SamplingParams(max_tokens=48)


async def test_first_finish_aborts_losers_on_the_real_worker(llama_worker: LlamaCppWorker) -> None:
    before = llama_worker.stats()
    result = await tl.arun(
        "Name a color.",
        "first-finish",
        n=6,
        worker=llama_worker,
        params=tl.SamplingParams(max_tokens=200),
        seed=1,
    )
    best = result.best
    assert best is not None and best.finish_reason != "abort"
    aborted = best.metadata["aborted"]
    assert aborted == result.usage.aborted_generations
    # the batch decodes in lockstep: each of the 5 losers stops within a step or two of the
    # decision (one may end on its own meanwhile, so it is not counted as aborted)
    assert best.metadata["tokens_after_decision"] <= 2 * 5
    assert llama_worker.stats()["live_sequences"] == 0
    assert llama_worker.stats()["decoded_tokens"] - before["decoded_tokens"] < 6 * 200


async def test_skeleton_of_thought_on_the_real_worker(llama_worker: LlamaCppWorker) -> None:
    result = await tl.arun(
        "Give three tips for better sleep.",
        "skeleton-of-thought:max_points=4",
        worker=llama_worker,
        params=PARAMS,
        seed=2,
    )
    best = result.best
    assert best is not None
    if best.metadata["mode"] == "skeleton":
        points = best.metadata["skeleton"]
        assert 2 <= len(points) <= 4
        assert len(best.steps) == len(points)
        assert result.usage.generations == 1 + len(points)
        # every point's prompt starts with the question, served from the prefix cache
        assert result.usage.cached_prompt_tokens > 0
    assert best.text.strip()


async def test_threads_on_the_real_worker(llama_worker: LlamaCppWorker) -> None:
    result = await tl.arun(
        "What is (2 + 3) * (4 + 5)?",
        "threads:max_blocks=1,thread_tokens=24",
        worker=llama_worker,
        params=PARAMS,
        seed=3,
    )
    best = result.best
    assert best is not None and best.text.strip()
    assert best.metadata["mode"] in ("threads", "sequential")
    if best.metadata["mode"] == "threads":
        assert "</Parallel>" in best.text
        assert any(e.kind == "join" for e in result.trace.edges)


async def test_graph_of_strategies_on_the_real_worker(llama_worker: LlamaCppWorker) -> None:
    plan = (
        StrategyGraph()
        .add("vote", "self-consistency:n=3")
        .add("race", "first-finish:n=3")
        .add("final", "vote", inputs=["vote", "race"])
        .build()
    )
    events = [
        e
        async for e in tl.stream(
            "What is 17 + 25? Give only the number.",
            plan,
            worker=llama_worker,
            params=PARAMS,
            seed=4,
        )
    ]
    result = events[-1].result
    assert result is not None
    assert len(result.candidates) == 4
    assert sum(e.type == "branch_start" for e in events) == 6
    assert any(e.type == "delta" for e in events)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "threadloom.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_graph_run_trace_roundtrip(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "nodes:\n  a: {strategy: best-of-n:n=2}\n  b: {strategy: single}\n"
        "  final: {strategy: vote, inputs: [a, b]}\n"
    )
    check = _cli("graph", "check", str(plan))
    assert check.returncode == 0 and "3 nodes" in check.stdout
    show = _cli("graph", "show", str(plan))
    assert "final: vote" in show.stdout and "join" in show.stdout
    trace = tmp_path / "run.jsonl"
    run = _cli(
        "run",
        "What is 2 + 2?",
        "--graph",
        str(plan),
        "--trace",
        str(trace),
        "--max-tokens",
        "24",
        "--seed",
        "5",
    )
    assert run.returncode == 0, run.stderr
    shown = _cli("trace", "show", str(trace))
    assert shown.returncode == 0
    assert shown.stdout.count("generation") == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes:\n  a: single\n  b: single\n")
    failed = _cli("graph", "check", str(bad))
    assert failed.returncode == 2 and "exactly one final node" in failed.stderr
