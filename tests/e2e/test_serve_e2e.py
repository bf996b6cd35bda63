"""`threadloom serve` on the real bundled model, queried with the official `openai` SDK."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai_server import HOST, free_port
from serving import serving, wait_until

pytestmark = pytest.mark.slow

ASK = [{"role": "user", "content": "What is 17 + 25? Answer with the number."}]


@pytest.fixture(scope="module")
def base_url(llama_worker: Any) -> Iterator[str]:
    with serving(llama_worker, max_concurrent_runs=8, default_max_tokens=48) as url:
        yield url


def test_chat_on_the_bundled_model_sync(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=300)
    ids = [m.id for m in client.models.list()]
    assert ids[0].startswith("SmolLM2") and "best-of-n" in ids
    reply = client.chat.completions.create(
        model=f"best-of-n:n=3@{ids[0]}", messages=ASK, n=2, max_tokens=32, seed=3
    )
    assert len(reply.choices) == 2
    assert all(c.message.content for c in reply.choices)
    usage = reply.usage
    assert usage is not None
    assert usage.model_extra["threadloom"]["generations"] == 3
    assert usage.completion_tokens <= 3 * 32
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_streamed_self_consistency_usage_is_the_sum_of_its_branches(base_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="self-consistency:n=4", messages=ASK, max_tokens=24, stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    progress = [c.model_extra["threadloom"] for c in chunks if c.model_extra.get("threadloom")]
    ends = [p for p in progress if p["type"] == "branch_end"]
    assert len(ends) == 4
    answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert answer.strip()
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens == sum(p["completion_tokens"] for p in ends)
    assert usage.model_extra["threadloom"]["generations"] == 4


async def test_plain_stream_sends_tokens_as_decoded(base_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="SmolLM2-135M-Instruct (Q4_1)", messages=ASK, max_tokens=24, stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    pieces = [c.choices[0].delta.content for c in chunks if c.choices]
    pieces = [piece for piece in pieces if piece]
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 1
    assert len(pieces) > 1  # streamed, not delivered at the end in one piece


def test_a_client_leaving_mid_stream_frees_the_model_at_the_next_step(
    base_url: str, llama_worker: Any
) -> None:
    body = {
        "model": "self-consistency:n=4",
        "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
        "max_tokens": 400,
        "stream": True,
    }
    with httpx.stream("POST", f"{base_url}/chat/completions", json=body, timeout=120) as answer:
        deltas = 0
        for line in answer.iter_lines():
            deltas += '"delta"' in line and '"text"' in line
            if deltas >= 8:
                break
        # a sample may already have ended on its own (an early end of text); the rest are live
        assert 1 <= llama_worker.stats()["live_sequences"] <= 4
    left = llama_worker.stats()
    # The server aborts the run's generations at once; the engine drops them at its next step
    # boundary: within a second on an idle machine, within two steps however loaded it is.
    assert wait_until(lambda: llama_worker.stats()["live_sequences"] == 0, 60.0)
    assert llama_worker.stats()["steps"] - left["steps"] <= 2


def test_the_serve_command_answers_the_openai_sdk() -> None:
    port = free_port()
    env = {**os.environ, "THREADLOOM_API_KEY": "k-123"}
    server = subprocess.Popen(
        [sys.executable, "-m", "threadloom.cli", "serve", "--port", str(port), "--max-n", "4"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        health = f"http://{HOST}:{port}/health"

        def up() -> bool:
            try:
                return httpx.get(health).status_code == 200
            except httpx.TransportError:
                return server.poll() is not None

        assert wait_until(up, 180.0) and server.poll() is None
        client = openai.OpenAI(
            base_url=f"http://{HOST}:{port}/v1", api_key="k-123", max_retries=0, timeout=300
        )
        reply = client.chat.completions.create(model="single", messages=ASK, max_tokens=16)
        assert reply.choices[0].message.content
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="best-of-n:n=5", messages=ASK)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert server.returncode is not None
