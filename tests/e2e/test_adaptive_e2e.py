"""Adaptive self-consistency on the real bundled model (slow: loads SmolLM2-135M)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from threadloom import Problem, SamplingParams
from threadloom.orchestrator.runner import arun

if TYPE_CHECKING:
    from threadloom.workers.llamacpp.worker import LlamaCppWorker

pytestmark = pytest.mark.slow

EASY = Problem(
    prompt="What is 2 + 2? Say it in a short sentence, ending with the number.",
    answer_format="number",
)


async def test_adaptive_stops_early_and_aborted_samples_leave_the_worker(
    llama_worker: LlamaCppWorker,
) -> None:
    worker = llama_worker
    result = await arun(
        EASY,
        "adaptive-consistency:max_n=16,wave=8,confidence=0.9",
        worker=worker,
        params=SamplingParams(temperature=0.5, max_tokens=48),
        seed=3,
    )
    [stop] = [n.data for n in result.trace.nodes if n.kind == "stop"]
    assert stop["stop_reason"] == "settled"
    # fewer samples decoded to their end than max_n (aborted ones stopped part way)
    assert stop["stopped_after"] < 16
    assert result.usage.generations - result.usage.aborted_generations < 16
    assert result.answer == "4"
    # the samples still decoding when the vote settled were aborted on the worker...
    assert stop["aborted"] >= 1
    assert result.usage.aborted_generations == stop["aborted"]
    # ...and are gone from it: nothing live, nothing queued
    for _ in range(50):
        stats = worker.stats()
        if stats["live_sequences"] == 0:
            break
        await asyncio.sleep(0.05)
    assert stats["live_sequences"] == 0 and stats["queued_requests"] == 0
