"""The worker core on its own: the thread bridge, the completion builder, BaseWorker."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from threadloom.errors import WorkerDead, WorkerError
from threadloom.types import GenerationRequest, SamplingParams, TokenLogprob
from threadloom.workers.base import StreamDelta, WorkerCapabilities, collect_stream
from threadloom.workers.core import BaseWorker, CompletionBuilder, ThreadBridge, aborted_completion

END = -1


class Aborts:
    """Records the aborts a bridge asks for, from any thread."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.calls.append(threading.current_thread().name)


def produce(bridge: ThreadBridge[int], items: list[int | BaseException]) -> threading.Thread:
    def run() -> None:
        for item in items:
            bridge.put(item)

    thread = threading.Thread(target=run, name="producer")
    thread.start()
    return thread


async def test_the_bridge_hands_items_over_in_order_and_stops_at_the_last() -> None:
    aborts = Aborts()
    bridge: ThreadBridge[int] = ThreadBridge(abort=aborts, is_last=lambda i: i == END)
    producer = produce(bridge, [*range(500), END, 999])
    got = [item async for item in bridge.drain()]
    producer.join()
    assert got == [*range(500), END]
    assert aborts.calls == []  # the request ended on its own


async def test_a_consumer_that_leaves_early_aborts_once() -> None:
    aborts = Aborts()
    bridge: ThreadBridge[int] = ThreadBridge(abort=aborts, is_last=lambda i: i == END)
    producer = produce(bridge, list(range(100)))
    items = bridge.drain()
    assert await anext(items) == 0
    await items.aclose()
    producer.join()
    assert aborts.calls == [threading.current_thread().name]


async def test_a_cancelled_consumer_aborts() -> None:
    aborts = Aborts()
    bridge: ThreadBridge[int] = ThreadBridge(abort=aborts, is_last=lambda i: i == END)

    async def consume() -> None:
        async for _ in bridge.drain():
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(aborts.calls) == 1


async def test_the_producers_error_reaches_the_consumer_without_an_abort() -> None:
    aborts = Aborts()
    bridge: ThreadBridge[int] = ThreadBridge(abort=aborts, is_last=lambda i: i == END)
    produce(bridge, [1, WorkerDead("engine crashed")]).join()
    got = []
    with pytest.raises(WorkerDead, match="engine crashed"):
        async for item in bridge.drain():
            got.append(item)
    assert got == [1] and aborts.calls == []


def test_a_closed_consumer_loop_aborts_from_the_producer_thread() -> None:
    aborts = Aborts()

    async def make() -> ThreadBridge[int]:
        return ThreadBridge(abort=aborts, is_last=lambda i: i == END)

    bridge = asyncio.run(make())  # the loop is closed once run() returns
    produce(bridge, [1, 2, END]).join()
    assert aborts.calls == ["producer"]  # asked once, by the producer, for the first lost item


def test_the_builder_makes_the_completion_from_the_deltas() -> None:
    request = GenerationRequest(text="q", params=SamplingParams(logprobs=1, stop=["."]))
    result = CompletionBuilder(request, "w", prompt_tokens=3)
    result.add("Hello", 1, [TokenLogprob(token="Hello", logprob=-0.5)])
    result.add(" world", 1, [TokenLogprob(token=" world", logprob=-0.25)])
    result.cached_prompt_tokens = 10  # a backend's count past the prompt is capped
    done = result.finish("stop", ".")
    assert done.text == "Hello world" and done.stop_reason == "."
    assert done.usage.prompt_tokens == 3 and done.usage.completion_tokens == 2
    assert done.usage.cached_prompt_tokens == 3
    assert [lp.token for lp in done.logprobs or ()] == ["Hello", " world"]
    assert done.request_id == request.request_id and done.worker_id == "w"
    assert 0 < done.timings.first_token_s <= done.timings.total_s
    assert result.finish("length", ".").stop_reason is None  # only a stop keeps its reason


def test_an_aborted_completion_keeps_what_was_delivered() -> None:
    request = GenerationRequest(text="q")
    plain = CompletionBuilder(request, "w")
    plain.add("partial", 2, [TokenLogprob(token="partial", logprob=-1.0)])
    aborted = plain.abort()
    assert (aborted.finish_reason, aborted.text, aborted.usage.completion_tokens) == (
        "abort",
        "partial",
        2,
    )
    assert aborted.logprobs is None  # none were asked for
    early = aborted_completion(request, "w", queued_s=0.5, total_s=0.5)
    assert early.finish_reason == "abort" and early.text == "" and early.timings.queued_s == 0.5


class Echo(BaseWorker):
    """The smallest backend: streams the request's text back word by word."""

    def __init__(self) -> None:
        self.worker_id = "echo"
        self.shutdowns = 0

    @property
    def capabilities(self) -> WorkerCapabilities:
        return WorkerCapabilities()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        self.check_open()
        result = CompletionBuilder(request, self.worker_id)
        for word in (request.text or "").split():
            result.add(word, 1)
            yield StreamDelta(text=word, tokens=1)
        yield StreamDelta(text="", completion=result.finish("stop"))

    async def abort(self, request_id: str) -> bool:
        return False

    async def _shutdown(self) -> None:
        self.shutdowns += 1


async def test_base_worker_gives_generate_close_and_async_with() -> None:
    async with Echo() as worker:
        assert (await worker.generate(GenerationRequest(text="a b c"))).text == "abc"
    assert worker.closed and worker.shutdowns == 1
    await worker.close()
    assert worker.shutdowns == 1  # released once
    with pytest.raises(WorkerDead, match="echo is closed"):
        await worker.generate(GenerationRequest(text="a"))


async def test_a_stream_without_its_completion_is_a_worker_error() -> None:
    async def broken() -> AsyncIterator[StreamDelta]:
        yield StreamDelta(text="x")

    with pytest.raises(WorkerError, match="without a final completion"):
        await collect_stream(broken())
