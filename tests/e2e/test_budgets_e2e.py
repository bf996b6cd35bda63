"""Deadlines and token budgets against real workers: the bundled model in-process, and the
OpenAI worker against llama_cpp.server on the same model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from openai_server import llama_server

import threadloom as tl
from threadloom.types import Budget, ChatMessage, GenerationRequest, SamplingParams
from threadloom.workers.openai.worker import ChatTemplate, OpenAIWorker

pytestmark = pytest.mark.slow

STORY = "Write a long story about a lighthouse keeper and the sea, in many paragraphs."
OVERRUN_S = 1.0
"""Generous here: the model shares two cores with the tests; without the deadline these runs
take many seconds. benchmarks/deadline_overrun.py measures the overrun itself."""


async def test_a_deadline_aborts_every_sequence_on_the_real_model(llama_worker: Any) -> None:
    params = SamplingParams(max_tokens=400, temperature=0.8)
    started = time.perf_counter()
    result = await tl.arun(STORY, "best-of-n", n=4, worker=llama_worker, params=params,
                           budget=Budget(max_wall_time_s=1.5), seed=1)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.5 + OVERRUN_S
    assert result.truncated
    assert result.usage.aborted_generations == 4
    # aborted on the worker: the engine drops the sequences at its next step boundary (a step
    # can take long on a busy machine: the first one also evaluates the prompt)
    for _ in range(250):
        if llama_worker.stats()["live_sequences"] == 0:
            break
        await asyncio.sleep(0.02)
    assert llama_worker.stats()["live_sequences"] == 0
    decoded = llama_worker.stats()["decoded_tokens"]
    await asyncio.sleep(0.3)
    assert llama_worker.stats()["decoded_tokens"] == decoded
    # what each had written is kept and counted
    assert sum(c.completion_tokens for c in result.candidates) == result.usage.completion_tokens


async def test_a_token_budget_on_the_real_model(llama_worker: Any) -> None:
    before = llama_worker.stats()["decoded_tokens"]
    result = await tl.arun(STORY, "best-of-n", n=4, worker=llama_worker,
                           params=SamplingParams(max_tokens=64),
                           budget=Budget(max_completion_tokens=40), seed=2)
    assert result.usage.completion_tokens <= 40
    assert result.truncated
    # the engine decoded no more than the grants (plus the prompt, evaluated once)
    prompt = result.usage.prompt_tokens - result.usage.cached_prompt_tokens
    assert llama_worker.stats()["decoded_tokens"] - before <= 40 + prompt + 4


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with llama_server(n_ctx=1024) as url:
        yield url


def _question(max_tokens: int) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage(role="user", content="Say hello."),),
        params=SamplingParams(max_tokens=max_tokens, temperature=0),
    )


async def test_a_deadline_through_the_openai_worker_frees_the_real_server(
    server_url: str,
) -> None:
    worker = OpenAIWorker(base_url=server_url, chat_template=ChatTemplate.from_gguf())
    try:
        started = time.perf_counter()
        await worker.generate(_question(4))
        alone = time.perf_counter() - started
        started = time.perf_counter()
        result = await tl.arun(STORY, "single", worker=worker,
                               params=SamplingParams(max_tokens=600, temperature=0.8),
                               budget=Budget(max_wall_time_s=1.5))
        assert time.perf_counter() - started < 1.5 + OVERRUN_S
        assert result.truncated and result.usage.aborted_generations == 1
        # the server runs one request at a time: had it gone on decoding the aborted story
        # (600 tokens, about ten seconds here), this short request would wait behind it
        started = time.perf_counter()
        await worker.generate(_question(4))
        assert time.perf_counter() - started < 2 * alone + 1.5
    finally:
        await worker.close()


async def test_a_token_budget_through_the_openai_worker(server_url: str) -> None:
    worker = OpenAIWorker(base_url=server_url, chat_template=ChatTemplate.from_gguf())
    try:
        result = await tl.arun(STORY, "best-of-n", n=3, worker=worker,
                               params=SamplingParams(max_tokens=32),
                               budget=Budget(max_completion_tokens=50), seed=3)
        assert result.usage.completion_tokens <= 50
        assert result.truncated
        assert len(result.candidates) == 2  # 32 + 18 tokens granted; the third was refused
    finally:
        await worker.close()
