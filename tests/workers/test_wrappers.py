"""Retrying, ConcurrencyLimited and Resuming: each wraps any worker and is a Worker itself."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from failing_workers import FULL, Breaking, Chunky, NewTurnWorker

from threadloom.errors import BadRequestError, ConfigError, RateLimited, WorkerUnavailable
from threadloom.types import ChatMessage, Completion, GenerationRequest, SamplingParams
from threadloom.workers.base import Worker
from threadloom.workers.fake import FakeWorker
from threadloom.workers.wrappers import ConcurrencyLimited, Resuming, Retrying

WORDS = FULL.split()


def chat(max_tokens: int = 100, **extra: Any) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage(role="user", content="go"),),
        params=SamplingParams(max_tokens=max_tokens),
        **extra,
    )


async def drain(worker: Worker, request: GenerationRequest) -> tuple[list[str], Completion]:
    """The text deltas of a stream and its final Completion."""
    texts: list[str] = []
    final = None
    async for delta in worker.stream(request):
        if delta.completion is not None:
            final = delta.completion
        elif delta.text:
            texts.append(delta.text)
    assert final is not None
    return texts, final


# ----- Retrying ---------------------------------------------------------------------------


async def test_retrying_sends_again_a_request_that_failed_before_its_first_token() -> None:
    inner = Breaking(breaks=[0, 0])
    async with Retrying(inner, attempts=3, backoff=0.0) as worker:
        texts, final = await drain(worker, chat())
    assert final.text == FULL and "".join(texts) == FULL
    assert len(inner.requests) == 3 and worker.retries == 2
    assert inner.tokens_emitted == len(WORDS)  # the failed tries decoded nothing


async def test_retrying_never_repeats_text_the_consumer_already_has() -> None:
    inner = Breaking(breaks=[3])
    worker = Retrying(inner, attempts=5, backoff=0.0)
    texts: list[str] = []
    with pytest.raises(WorkerUnavailable, match="connection reset"):
        async for delta in worker.stream(chat()):
            texts.append(delta.text)
    assert "".join(texts) == " ".join(WORDS[:3])
    assert len(inner.requests) == 1


async def test_retrying_gives_up_after_its_attempts_and_skips_bad_requests() -> None:
    inner = Breaking(breaks=[0, 0, 0, 0])
    with pytest.raises(WorkerUnavailable):
        await Retrying(inner, attempts=3, backoff=0.0).generate(chat())
    assert len(inner.requests) == 3
    rejecting = Breaking(breaks=[0], error=BadRequestError)
    with pytest.raises(BadRequestError):
        await Retrying(rejecting, attempts=3, backoff=0.0).generate(chat())
    assert len(rejecting.requests) == 1


async def test_an_abort_during_the_retry_pause_ends_the_request_there() -> None:
    inner = Breaking(breaks=[0])
    worker = Retrying(inner, attempts=3, backoff=30.0, max_backoff=30.0)
    request = chat()
    task = asyncio.create_task(worker.generate(request))
    while not inner.requests:
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.01)  # the first try failed; the pause runs
    assert await worker.abort(request.request_id)
    final = await asyncio.wait_for(task, 5)
    assert final.finish_reason == "abort" and final.text == ""
    assert len(inner.requests) == 1  # the retry was never sent


def test_retry_pauses_double_and_honour_retry_after_within_the_cap() -> None:
    worker = Retrying(FakeWorker(), attempts=5, backoff=0.1, max_backoff=1.0)
    busy = WorkerUnavailable("busy")
    assert [worker.delay(n, busy) for n in (1, 2, 3, 4, 5)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    assert worker.delay(1, RateLimited("slow down", retry_after_s=0.5)) == 0.5
    assert worker.delay(1, RateLimited("slow down", retry_after_s=60)) == 1.0
    with pytest.raises(ConfigError, match="attempts"):
        Retrying(FakeWorker(), attempts=0)


# ----- ConcurrencyLimited -----------------------------------------------------------------


async def test_concurrency_limited_keeps_at_most_n_in_flight() -> None:
    inner = FakeWorker(["a b c d"], token_delay_s=0.01)
    worker = ConcurrencyLimited(inner, 2)
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, inner.in_flight)
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    done = await asyncio.gather(*(worker.generate(chat()) for _ in range(6)))
    watcher.cancel()
    assert all(c.text == "a b c d" for c in done)
    assert peak == 2 and worker.in_flight == 0 and worker.queued == 0
    assert worker.capabilities.max_batch == 2


async def test_an_aborted_queued_request_never_reaches_the_worker() -> None:
    inner = FakeWorker([" ".join(["tok"] * 100)], token_delay_s=0.005)
    worker = ConcurrencyLimited(inner, 1)
    first, queued = chat(), chat()
    running = asyncio.create_task(worker.generate(first))
    waiting = asyncio.create_task(worker.generate(queued))
    await asyncio.sleep(0.05)
    assert worker.queued == 1
    assert await worker.abort(queued.request_id)
    aborted = await asyncio.wait_for(waiting, 5)
    assert aborted.finish_reason == "abort" and aborted.text == ""
    assert await worker.abort(first.request_id)  # a running one is stopped on the worker
    assert (await running).finish_reason == "abort"
    assert [r.request_id for r in inner.requests] == [first.request_id]
    assert inner.aborted == [first.request_id]


async def test_a_cancelled_queued_request_gives_its_turn_away() -> None:
    inner = FakeWorker(["a b c"], token_delay_s=0.02)
    worker = ConcurrencyLimited(inner, 1)
    first, gone, last = chat(), chat(), chat()
    running = asyncio.create_task(worker.generate(first))
    leaving = asyncio.create_task(worker.generate(gone))
    after = asyncio.create_task(worker.generate(last))
    await asyncio.sleep(0.01)
    leaving.cancel()
    assert (await running).text == "a b c" and (await after).text == "a b c"
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert [r.request_id for r in inner.requests] == [first.request_id, last.request_id]
    assert worker.in_flight == 0 and worker.queued == 0


# ----- Resuming ---------------------------------------------------------------------------


async def test_a_broken_stream_continues_from_its_text_within_max_tokens() -> None:
    inner = Breaking(breaks=[5])
    worker = Resuming(inner)
    texts, final = await drain(worker, chat(max_tokens=20))
    assert final.text == "".join(texts) == " ".join(WORDS[:20])
    assert final.finish_reason == "length" and final.usage.completion_tokens == 20
    assert final.attempts == 2 and final.failed_workers == ("breaking",)
    second = inner.requests[1]
    assert second.request_id == inner.requests[0].request_id
    assert second.prefix == " ".join(WORDS[:5]) and second.params.max_tokens == 15
    assert inner.tokens_emitted == 20  # nothing decoded twice


async def test_resuming_counts_tokens_per_chunk_not_per_delta() -> None:
    inner = Chunky(breaks=[4])
    texts, final = await drain(Resuming(inner), chat(max_tokens=10))
    assert texts[:2] == [" ".join(WORDS[:2]), " " + " ".join(WORDS[2:4])]
    assert inner.requests[1].params.max_tokens == 6  # 4 tokens in 2 deltas were spent
    assert final.text == " ".join(WORDS[:10]) and final.usage.completion_tokens == 10


async def test_resuming_leaves_failures_before_any_text_and_repeated_breaks_to_the_caller() -> None:
    before = Breaking(breaks=[0])
    with pytest.raises(WorkerUnavailable):
        await Resuming(before).generate(chat())
    assert len(before.requests) == 1
    always = Breaking(breaks=[2, 1, 1, 1, 1])
    with pytest.raises(WorkerUnavailable):
        await Resuming(always, max_resumes=2).generate(chat())
    assert len(always.requests) == 3


async def test_resuming_over_retrying_retries_each_continuation() -> None:
    inner = Breaking(breaks=[3, 0, 0])  # breaks after 3 tokens; the continuation fails twice
    texts, final = await drain(Resuming(Retrying(inner, attempts=3, backoff=0.0)), chat())
    assert final.text == "".join(texts) == FULL
    assert final.usage.completion_tokens == len(WORDS) and final.attempts == 2
    assert [r.prefix for r in inner.requests] == [""] + [" ".join(WORDS[:3])] * 3


async def test_resuming_refuses_a_worker_that_cannot_continue_a_prefix() -> None:
    with pytest.raises(ConfigError, match="cannot continue an assistant prefix"):
        Resuming(NewTurnWorker())


async def test_an_abort_reaches_the_inner_worker_through_every_wrapper() -> None:
    inner = FakeWorker([" ".join(["tok"] * 200)], token_delay_s=0.005)
    worker = Resuming(Retrying(ConcurrencyLimited(inner, 4)))
    request = chat(max_tokens=200)
    task = asyncio.create_task(worker.generate(request))
    while not inner.in_flight:
        await asyncio.sleep(0.001)
    assert await worker.abort(request.request_id)
    final = await asyncio.wait_for(task, 5)
    assert final.finish_reason == "abort" and inner.aborted == [request.request_id]
    assert inner.in_flight == 0
    await worker.close()
    with pytest.raises(Exception, match="closed"):
        await inner.generate(chat())
