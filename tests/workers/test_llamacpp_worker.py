"""The embedded llama.cpp worker on the real bundled SmolLM2-135M model."""

from __future__ import annotations

import asyncio

import pytest

from threadloom import (
    ConfigError,
    ContextLengthError,
    GenerationRequest,
    ModelNotFoundError,
    SamplingParams,
)
from threadloom.types import ChatMessage, Completion
from threadloom.workers.llamacpp.worker import LlamaCppWorker


def chat(text: str, **params: object) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage(role="user", content=text),), params=SamplingParams(**params)
    )


@pytest.mark.slow
async def test_greedy_generation_is_sensible_and_repeatable(llama_worker: LlamaCppWorker) -> None:
    question = "Which animal says meow?"
    first = await llama_worker.generate(chat(question, temperature=0, max_tokens=24))
    second = await llama_worker.generate(chat(question, temperature=0, max_tokens=24))
    assert "cat" in first.text.lower()
    assert first.text == second.text
    assert first.usage.prompt_tokens > 10
    assert 0 < first.usage.completion_tokens <= 24
    assert first.timings.total_s >= first.timings.first_token_s > 0
    # the second identical prompt reuses the first one's cached prefix
    assert second.usage.cached_prompt_tokens == second.usage.prompt_tokens - 1


@pytest.mark.slow
async def test_max_tokens_and_stop_strings(llama_worker: LlamaCppWorker) -> None:
    long = await llama_worker.generate(
        chat("Write a long story about a dragon.", max_tokens=7, seed=1)
    )
    assert long.finish_reason == "length"
    assert long.usage.completion_tokens == 7
    counted = await llama_worker.generate(
        chat("Count from 1 to 20 separated by commas.", temperature=0, max_tokens=60, stop=["5"])
    )
    assert counted.finish_reason == "stop"
    assert "5" not in counted.text
    assert "4" in counted.text


@pytest.mark.slow
async def test_logprobs_are_returned(llama_worker: LlamaCppWorker) -> None:
    out = await llama_worker.generate(chat("Say hello.", max_tokens=8, logprobs=3, seed=2))
    assert out.logprobs is not None and len(out.logprobs) == out.usage.completion_tokens
    for token in out.logprobs:
        assert token.logprob <= 0
        assert len(token.top) <= 3
        assert max(token.top.values()) >= token.logprob - 1e-6
    assert "".join(t.token for t in out.logprobs).strip() == out.text.strip()


@pytest.mark.slow
async def test_seeded_sampling_reproduces() -> None:
    # Exact reproduction needs the same batch shapes: llama.cpp picks other kernels for bigger
    # batches, and adaptive speculation changes a sequence's batch from step to step.
    worker = LlamaCppWorker(n_slots=2, speculation="off")
    try:
        request = chat("Name a fruit.", temperature=1.0, max_tokens=12, seed=11)
        a = await worker.generate(request)
        b = await worker.generate(request.model_copy(update={"request_id": "again"}))
        assert a.text == b.text
    finally:
        await worker.close()


@pytest.mark.slow
async def test_streaming_deltas_add_up_to_the_text(llama_worker: LlamaCppWorker) -> None:
    deltas: list[str] = []
    final = None
    async for delta in llama_worker.stream(chat("List three colors.", max_tokens=30, seed=3)):
        deltas.append(delta.text)
        if delta.completion is not None:
            final = delta.completion
    assert final is not None
    assert len([d for d in deltas if d]) >= 3
    assert "".join(deltas) == final.text


@pytest.mark.slow
async def test_abort_stops_decoding_within_a_few_tokens(llama_worker: LlamaCppWorker) -> None:
    request = chat("Count from 1 to 300, separated by commas.", temperature=0, max_tokens=400)
    started = asyncio.Event()
    final: list[Completion] = []

    async def consume() -> None:
        async for delta in llama_worker.stream(request):
            if delta.text:
                started.set()
            if delta.completion is not None:
                final.append(delta.completion)

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), timeout=60)
    before = llama_worker.stats()["decoded_tokens"]
    assert await llama_worker.abort(request.request_id)
    await task
    after = llama_worker.stats()["decoded_tokens"]
    assert final and final[0].finish_reason == "abort"
    assert final[0].usage.completion_tokens < 400
    # a step in flight may finish, with its drafted tokens when speculation is on
    assert after - before <= 2 + 16


@pytest.mark.slow
async def test_cancelling_the_caller_aborts_the_request(llama_worker: LlamaCppWorker) -> None:
    request = chat("Write a very long poem about the sea.", max_tokens=400, seed=5)
    task = asyncio.create_task(llama_worker.generate(request))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the engine thread drops the sequence at its next step; poll instead of guessing how long
    # a step takes on a loaded machine
    for _ in range(100):
        if llama_worker.stats()["live_sequences"] == 0:
            break
        await asyncio.sleep(0.05)
    assert llama_worker.stats()["live_sequences"] == 0


@pytest.mark.slow
async def test_batched_sequences_share_forward_passes(llama_worker: LlamaCppWorker) -> None:
    before = llama_worker.stats()
    requests = [chat("Tell me a fact about cats.", max_tokens=40, seed=i) for i in range(8)]
    outs = await asyncio.gather(*(llama_worker.generate(r) for r in requests))
    after = llama_worker.stats()
    tokens = sum(o.usage.completion_tokens for o in outs)
    steps = after["steps"] - before["steps"]
    assert tokens > 8 * 10
    # one forward pass advances many sequences: far fewer steps than tokens
    assert steps < tokens / 3
    # the shared prompt is prefilled once and copied to the other sequences
    assert sum(o.usage.cached_prompt_tokens for o in outs) >= 7 * (outs[0].usage.prompt_tokens - 1)
    assert len({o.text for o in outs}) > 1


@pytest.mark.slow
async def test_prompt_longer_than_the_context_is_a_clear_error() -> None:
    worker = LlamaCppWorker(n_ctx=128, n_slots=2)
    try:
        with pytest.raises(ContextLengthError, match=r"context window holds \d+"):
            await worker.generate(chat("word " * 400))
        # the worker still serves after the error
        ok = await worker.generate(chat("Hi", max_tokens=4))
        assert ok.usage.completion_tokens >= 1
    finally:
        await worker.close()


def test_too_few_cells_per_slot_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"leaves 25 cells to each of the 4 slots"):
        LlamaCppWorker(n_ctx=100, n_slots=4)


@pytest.mark.slow
async def test_a_completion_stops_at_the_end_of_its_own_slot_while_a_neighbour_goes_on() -> None:
    # counting on and on fills its own slot's stream and ends there ("length"), without taking
    # cells from the other sequence, which finishes as asked
    worker = LlamaCppWorker(n_ctx=512, n_slots=2, speculation="off")
    per_slot = worker.capabilities.max_context
    counting = GenerationRequest(
        text="1, 2, 3, 4, 5, 6,", params=SamplingParams(temperature=0, max_tokens=1000)
    )
    try:
        endless, short = await asyncio.gather(
            worker.generate(counting),
            worker.generate(chat("Say hello.", max_tokens=6, temperature=0)),
        )
        assert endless.finish_reason == "length"
        assert endless.usage.prompt_tokens + endless.usage.completion_tokens <= per_slot
        assert endless.usage.completion_tokens > per_slot // 2
        assert short.usage.completion_tokens >= 1
        assert worker.stats()["live_sequences"] == 0
    finally:
        await worker.close()


PASSAGE = " ".join(f"Item {j} is blue." for j in range(40))


@pytest.mark.slow
async def test_a_prefix_reused_from_a_finished_sequence_gives_the_same_text() -> None:
    # the finished sequence's slot is cut back to the shared prefix in place; a bad cut would
    # leave stale cells where the new prompt's tail and completion go
    first = chat(PASSAGE + " What colour is item 3?", temperature=0, max_tokens=16)
    second = chat(PASSAGE + " How many items are there?", temperature=0, max_tokens=16)
    fresh = LlamaCppWorker(n_slots=2, speculation="off")
    reused = LlamaCppWorker(n_slots=2, speculation="off")
    try:
        alone = await fresh.generate(second)
        await reused.generate(first)
        after = await reused.generate(second)
        assert after.usage.cached_prompt_tokens > 100
        assert alone.usage.cached_prompt_tokens == 0
        assert after.text == alone.text
    finally:
        await fresh.close()
        await reused.close()


@pytest.mark.slow
async def test_a_prefix_copied_from_a_live_sequence_into_another_stream() -> None:
    # each slot has its own KV stream: sharing a live sequence's prefix copies that whole
    # sequence into the new slot's stream and cuts it back to the prefix
    long_running = chat(PASSAGE + " Count from 1 to 200.", temperature=0, max_tokens=120)
    question = chat(PASSAGE + " What colour is item 3?", temperature=0, max_tokens=16)
    worker = LlamaCppWorker(n_slots=2, speculation="off")
    try:
        stream = worker.stream(long_running)
        await anext(stream)  # the long request is decoding in slot 0
        answer = await worker.generate(question)
        assert answer.usage.cached_prompt_tokens > 100
        assert answer.finish_reason == "stop"
        assert "blue" in answer.text.lower()
        assert worker.stats()["live_sequences"] == 1  # the long one is still running
        rest = [delta async for delta in stream]
        assert rest
    finally:
        await worker.close()


def test_missing_model_file_names_the_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelNotFoundError, match=r"nope\.gguf"):
        LlamaCppWorker(missing)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelNotFoundError, match="could not load"):
        LlamaCppWorker(bad)
