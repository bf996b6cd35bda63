"""OpenAIWorker: end to end against llama_cpp.server on the bundled model, and against a scripted
server on 127.0.0.1 for retries, error mapping and stream handling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from openai_server import (
    Reply,
    RewritingProxy,
    ScriptedServer,
    chat_reply,
    completion_reply,
    free_port,
    llama_server,
)

import threadloom
from threadloom.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ContextLengthError,
    RateLimited,
    WorkerDead,
    WorkerUnavailable,
)
from threadloom.types import ChatMessage, GenerationRequest, SamplingParams
from threadloom.workers.base import Worker, collect_stream
from threadloom.workers.openai.protocol import (
    ErrorBody,
    EventStreamDecoder,
    request_error,
)
from threadloom.workers.openai.replies import split_tokens
from threadloom.workers.openai.worker import ChatTemplate, OpenAIWorker
from threadloom.workers.registry import make_worker

FAST_RETRIES = {"max_retries": 2, "backoff_s": 0.01, "max_backoff_s": 0.05}


def chat(text: str, prefix: str = "", **params: object) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage(role="user", content=text),),
        prefix=prefix,
        params=SamplingParams(**params),  # type: ignore[arg-type]
    )


def raw(text: str, **params: object) -> GenerationRequest:
    return GenerationRequest(text=text, params=SamplingParams(**params))  # type: ignore[arg-type]


# ----- the real server ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    with llama_server(n_ctx=1024) as url:
        yield url


@pytest.fixture(scope="session")
def template() -> ChatTemplate:
    return ChatTemplate.from_gguf()


@pytest.fixture
async def worker(server_url: str, template: ChatTemplate) -> object:
    worker = OpenAIWorker(base_url=server_url, chat_template=template, worker_id="oai")
    yield worker
    await worker.close()


slow = pytest.mark.slow


@slow
async def test_chat_generate_with_usage_and_timings(worker: OpenAIWorker) -> None:
    assert isinstance(worker, Worker)
    question = chat("What is the capital of France?", temperature=0, max_tokens=12)
    first = await worker.generate(question)
    second = await worker.generate(question)
    assert first.text and first.text == second.text
    assert first.finish_reason in ("stop", "length")
    assert first.usage.prompt_tokens > 10
    assert 0 < first.usage.completion_tokens <= 12
    assert first.worker_id == "oai" and first.request_id == question.request_id
    assert first.timings.total_s >= first.timings.queued_s >= 0
    assert first.timings.total_s > 0
    # the model name was asked of the server
    assert worker.capabilities.model.endswith(".gguf")


@slow
async def test_completions_endpoint_renders_the_same_prompt(
    server_url: str, template: ChatTemplate, worker: OpenAIWorker
) -> None:
    question = chat("Name three colors.", temperature=0, max_tokens=10)
    via_chat = await worker.generate(question)
    rendering = OpenAIWorker(base_url=server_url, endpoint="completions", chat_template=template)
    try:
        via_text = await rendering.generate(question)
    finally:
        await rendering.close()
    assert via_text.text == via_chat.text
    assert via_text.usage.prompt_tokens == via_chat.usage.prompt_tokens


@slow
async def test_assistant_prefix_is_continued(worker: OpenAIWorker) -> None:
    out = await worker.generate(
        chat(
            "What is the capital of France?",
            prefix="The capital of France is",
            temperature=0,
            max_tokens=6,
        )
    )
    assert "Paris" in out.text
    assert not out.text.startswith("The capital")


@slow
async def test_logprobs_on_raw_text(worker: OpenAIWorker) -> None:
    out = await worker.generate(raw("1, 2, 3,", temperature=0, max_tokens=6, logprobs=2))
    assert out.logprobs is not None and len(out.logprobs) == out.usage.completion_tokens == 6
    assert "".join(t.token for t in out.logprobs) == out.text
    assert "4" in out.text
    for token in out.logprobs:
        assert token.logprob <= 0
        assert 1 <= len(token.top) <= 2
        assert token.top.get(token.token) == pytest.approx(token.logprob)


@slow
async def test_stop_strings(worker: OpenAIWorker) -> None:
    counted = await worker.generate(raw("1, 2, 3,", temperature=0, max_tokens=30, stop=["7"]))
    assert counted.finish_reason == "stop"
    assert "6" in counted.text and "7" not in counted.text
    streamed = await collect_stream(
        worker.stream(raw("1, 2, 3,", temperature=0, max_tokens=30, stop=["7"]))
    )
    assert streamed.text == counted.text and streamed.finish_reason == "stop"


@slow
async def test_stream_deltas_add_up_to_the_completion(worker: OpenAIWorker) -> None:
    deltas: list[str] = []
    final = None
    async for delta in worker.stream(
        chat("Write a poem about cats.", temperature=0, max_tokens=16)
    ):
        if delta.completion is not None:
            final = delta.completion
        else:
            deltas.append(delta.text)
    assert final is not None and final.finish_reason == "length"
    assert len(deltas) > 3
    assert "".join(deltas) == final.text
    # llama_cpp.server streams no usage: one token a chunk
    assert final.usage.completion_tokens == len(deltas) == 16
    assert 0 < final.timings.first_token_s <= final.timings.total_s
    plain = await worker.generate(chat("Write a poem about cats.", temperature=0, max_tokens=16))
    assert plain.text == final.text


@slow
async def test_abort_mid_stream(worker: OpenAIWorker) -> None:
    request = chat("Write a very long story about a dragon.", max_tokens=400, seed=1)
    deltas = 0
    final = None
    async for delta in worker.stream(request):
        if delta.completion is not None:
            final = delta.completion
            continue
        deltas += 1
        if deltas == 3:
            assert await worker.abort(request.request_id)
    assert final is not None
    assert final.finish_reason == "abort"
    assert 3 <= final.usage.completion_tokens < 20
    assert not await worker.abort(request.request_id)
    # the server is free for the next request
    after = await worker.generate(chat("Say hi.", temperature=0, max_tokens=4))
    assert after.finish_reason in ("stop", "length")


@slow
async def test_n_choices_are_seeded_and_distinct(worker: OpenAIWorker) -> None:
    request = chat("Name a fruit.", temperature=1.0, max_tokens=6, seed=3)
    first = await worker.generate_n(request, 3)
    again = await worker.generate_n(request, 3)
    assert len(first) == 3
    assert [c.text for c in first] == [c.text for c in again]
    assert len({c.text for c in first}) > 1
    assert all(c.usage.completion_tokens > 0 for c in first)


@slow
async def test_prompt_longer_than_the_context(worker: OpenAIWorker) -> None:
    with pytest.raises(ContextLengthError) as caught:
        await worker.generate(raw("hello " * 1500, max_tokens=4))
    assert caught.value.context_length == 1024
    assert caught.value.prompt_tokens > 1024


@slow
def test_best_of_n_run_through_the_orchestrator(server_url: str, template: ChatTemplate) -> None:
    # logprobs are cheap on llama_cpp.server's completions endpoint: render chat with the template
    worker = OpenAIWorker(base_url=server_url, endpoint="completions", chat_template=template)
    params = SamplingParams(max_tokens=12)
    for seed in (1, 2):  # two runs, two event loops, one worker
        result = threadloom.run(
            "What is 2 + 3? Give only the number.",
            "best-of-n",
            n=3,
            worker=worker,
            params=params,
            seed=seed,
        )
        assert len(result.candidates) == 3
        assert result.usage.generations == 3
        assert 0 < result.usage.completion_tokens <= 36
        assert result.best is not None and result.best.mean_logprob is not None
        assert all(c.text for c in result.candidates)
    asyncio.run(worker.close())


def raise_the_limit(body: dict[str, Any]) -> dict[str, Any]:
    """What a server that ignores max_tokens would do: generate far past it."""
    return {**body, "max_tokens": 120}


@slow
async def test_a_server_that_ignores_max_tokens_is_cut_off(
    server_url: str, worker: OpenAIWorker
) -> None:
    story = raw("Once upon a time, in a land far away,", temperature=0, max_tokens=8)
    numbers = raw("1, 2, 3,", temperature=0, max_tokens=6, logprobs=1)
    expected_story = await worker.generate(story)
    expected_numbers = await worker.generate(numbers)
    with RewritingProxy(server_url, raise_the_limit) as proxy:
        beyond = OpenAIWorker(base_url=proxy.base_url, chat_template=worker.config.chat_template)
        try:
            deltas = [d async for d in beyond.stream(story)]
            for _ in range(200):  # the proxy notices the closed connection at its next write
                if proxy.disconnects:
                    break
                await asyncio.sleep(0.05)
            plain = await beyond.generate(numbers)
        finally:
            await beyond.close()
    assert [b["max_tokens"] for b in proxy.bodies] == [120, 120]
    streamed = deltas[-1].completion
    assert streamed is not None
    # llama_cpp.server streams one token a chunk: the client kept exactly eight
    assert len(deltas) - 1 == 8 == streamed.usage.completion_tokens
    assert (streamed.text, streamed.finish_reason) == (expected_story.text, "length")
    assert proxy.disconnects == 1  # the stream was closed long before its 120 tokens
    # the plain reply came whole (with 120 tokens' usage) and was cut at the sixth token
    assert (plain.text, plain.finish_reason) == (expected_numbers.text, "length")
    assert plain.logprobs is not None and len(plain.logprobs) == 6
    assert plain.usage.completion_tokens == 6


# ----- retries and errors (scripted server) -------------------------------------------------


async def test_connection_refused_gives_up_after_bounded_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    worker = OpenAIWorker(base_url=url, model="m", **FAST_RETRIES)
    started = time.perf_counter()
    with pytest.raises(WorkerUnavailable) as caught:
        await worker.generate(chat("hi"))
    assert time.perf_counter() - started < 5
    assert not isinstance(caught.value, RateLimited)
    message = str(caught.value)
    assert "cannot reach" in message and "3 attempts" in message and "start the server" in message


async def test_503_then_success_retries_once() -> None:
    replies = [Reply(503, {"error": {"message": "loading"}}), Reply(200, chat_reply("fine"))]
    with ScriptedServer(replies) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m", **FAST_RETRIES)
        out = await worker.generate(chat("hi"))
    assert out.text == "fine"
    assert len(server.posts) == 2
    assert server.posts[0].path == "/v1/chat/completions"


async def test_5xx_every_time_is_unavailable_after_all_attempts() -> None:
    with ScriptedServer([Reply(502, "bad gateway")]) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m", **FAST_RETRIES)
        with pytest.raises(WorkerUnavailable, match="502"):
            await worker.generate(chat("hi"))
    assert len(server.posts) == 3


async def test_429_is_retried_and_retry_after_is_honoured() -> None:
    limited = Reply(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "0.3"})
    with ScriptedServer([limited, Reply(200, chat_reply("ok"))]) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m", max_backoff_s=1, backoff_s=0.01)
        started = time.perf_counter()
        out = await worker.generate(chat("hi"))
        waited = time.perf_counter() - started
    assert out.text == "ok" and len(server.posts) == 2
    assert waited >= 0.3


async def test_429_every_time_raises_rate_limited() -> None:
    limited = Reply(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "0"})
    with ScriptedServer([limited]) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m", **FAST_RETRIES)
        with pytest.raises(RateLimited) as caught:
            await worker.generate(chat("hi"))
    assert len(server.posts) == 3
    assert caught.value.retry_after_s == 0
    assert "max_concurrency" in str(caught.value)


async def test_400_is_not_retried() -> None:
    body = {"error": {"message": "top_p must be in (0, 1]", "type": "invalid_request_error"}}
    with ScriptedServer([Reply(400, body)]) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m", **FAST_RETRIES)
        with pytest.raises(BadRequestError, match="top_p") as caught:
            await worker.generate(chat("hi"))
    assert len(server.posts) == 1
    assert caught.value.status_code == 400
    assert not isinstance(caught.value, ContextLengthError)


async def test_context_length_error_body() -> None:
    body = {
        "error": {
            "message": "This model's maximum context length is 512 tokens, however you requested "
            "605 tokens (601 in your prompt; 4 for the completion). Please reduce your prompt.",
            "type": "invalid_request_error",
            "code": "context_length_exceeded",
        }
    }
    with ScriptedServer([Reply(400, body)]) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m", **FAST_RETRIES)
        with pytest.raises(ContextLengthError) as caught:
            await worker.generate(chat("hi"))
    assert len(server.posts) == 1
    assert (caught.value.prompt_tokens, caught.value.context_length) == (601, 512)
    assert "shorten the prompt" in str(caught.value)


async def test_401_is_an_auth_error_and_the_key_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123")
    with ScriptedServer([Reply(401, {"error": {"message": "Invalid API key"}})]) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m", **FAST_RETRIES)
        with pytest.raises(AuthenticationError, match="OPENAI_API_KEY"):
            await worker.generate(chat("hi"))
    assert len(server.posts) == 1
    assert server.posts[0].headers["Authorization"] == "Bearer sk-test-123"
    assert "sk-test-123" not in repr(worker.config)


async def test_slow_answer_times_out_without_retrying() -> None:
    with ScriptedServer([Reply(200, chat_reply(), delay_s=1.0)]) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m", timeout=0.2, **FAST_RETRIES)
        with pytest.raises(WorkerUnavailable, match=r"within 0\.2s"):
            await worker.generate(chat("hi"))
    assert len(server.posts) == 1


# ----- request bodies and reply shapes (scripted server) ------------------------------------


async def test_sampling_params_and_model_from_the_server_list() -> None:
    models = {"data": [{"id": "served-model", "max_model_len": 2048}]}
    with ScriptedServer([Reply(200, completion_reply())], models=models) as server:
        worker = OpenAIWorker(base_url=server.base_url + "/", headers={"X-Team": "a"})
        await worker.generate(
            raw("Once", temperature=0.5, top_p=0.9, max_tokens=7, stop=["\n"], seed=4)
        )
    body = server.posts[0].body
    assert server.posts[0].path == "/v1/completions"
    assert body["model"] == "served-model" and body["prompt"] == "Once"
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.5, 0.9, 7)
    assert body["stop"] == ["\n"] and body["seed"] == 4
    assert "logprobs" not in body and "n" not in body
    assert server.posts[0].headers["X-Team"] == "a"
    assert worker.capabilities.max_context == 2048
    assert worker.capabilities.model == "served-model"


async def test_prefix_without_a_template_asks_to_continue_the_final_message() -> None:
    with ScriptedServer([Reply(200, chat_reply(" Paris."))]) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m")
        out = await worker.generate(chat("Capital of France?", prefix="It is"))
    body = server.posts[0].body
    assert out.text == " Paris."
    assert body["messages"][-1] == {"role": "assistant", "content": "It is"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False


async def test_n_choices_in_one_reply() -> None:
    reply = {
        "choices": [
            {"index": 1, "text": "bb bb", "finish_reason": "length"},
            {"index": 0, "text": "a", "finish_reason": "stop", "stop_reason": "\n"},
            {"index": 2, "text": "cc", "finish_reason": "stop"},
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 8},
    }
    with ScriptedServer([Reply(200, reply)]) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m")
        outs = await worker.generate_n(raw("x", stop=["\n"]), 3)
    assert len(server.posts) == 1 and server.posts[0].body["n"] == 3
    assert [c.text for c in outs] == ["a", "bb bb", "cc"]
    assert [c.finish_reason for c in outs] == ["stop", "length", "stop"]
    assert outs[0].stop_reason == "\n"
    assert sum(c.usage.completion_tokens for c in outs) == 8
    assert [c.usage.cached_prompt_tokens for c in outs] == [0, 10, 10]


async def test_chat_logprobs_are_mapped() -> None:
    def entry(token: str, logprob: float, alt: str, alt_lp: float) -> dict[str, object]:
        return {
            "token": token,
            "logprob": logprob,
            "bytes": None,
            "top_logprobs": [
                {"token": token, "logprob": logprob},
                {"token": alt, "logprob": alt_lp},
            ],
        }

    reply = chat_reply("The number")
    reply["choices"][0]["logprobs"] = {
        "content": [entry("The", -1.7, "This", -2.4), entry(" number", -2.0, " count", -2.9)]
    }
    with ScriptedServer([Reply(200, reply)]) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m")
        out = await worker.generate(chat("hi", logprobs=1))
    body = server.posts[0].body
    assert body["logprobs"] is True and body["top_logprobs"] == 1
    assert out.logprobs is not None
    assert [(t.token, t.logprob) for t in out.logprobs] == [("The", -1.7), (" number", -2.0)]
    assert out.logprobs[0].top == {"The": -1.7, "This": -2.4}


def chunk(text: str, finish: str | None = None) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


async def test_stream_takes_usage_from_the_last_chunk_and_retries_before_it_starts() -> None:
    usage = {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}}
    events = [chunk("a"), chunk("b"), chunk("c", "length"), usage, "[DONE]"]
    replies = [Reply(503, "warming up"), Reply(200, events=events)]
    with ScriptedServer(replies) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m", **FAST_RETRIES)
        deltas = [d async for d in worker.stream(chat("hi"))]
    final = deltas[-1].completion
    assert final is not None
    assert [d.text for d in deltas[:-1]] == ["a", "b", "c"]
    assert final.text == "abc" and final.finish_reason == "length"
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (9, 3)
    assert len(server.posts) == 2
    assert server.posts[1].body["stream"] is True
    assert server.posts[1].body["stream_options"] == {"include_usage": True}


async def test_stream_from_a_server_that_answers_with_one_reply() -> None:
    with ScriptedServer([Reply(200, chat_reply("whole answer"))]) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m")
        deltas = [d async for d in worker.stream(chat("hi"))]
    final = deltas[-1].completion
    assert [d.text for d in deltas] == ["whole answer", ""]
    assert final is not None and final.text == "whole answer" and final.finish_reason == "stop"
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (5, 2)


async def test_stream_cut_short_is_asked_again_as_a_plain_request() -> None:
    replies = [Reply(200, events=[chunk("a"), "[DONE]"]), Reply(200, chat_reply("whole"))]
    with ScriptedServer(replies) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m")
        final = await collect_stream(worker.stream(chat("hi")))
        assert final.text == "whole" and final.finish_reason == "stop"
        assert [p.body.get("stream", False) for p in server.posts] == [True, False]
        # the server cuts streams: later generations are plain requests from the start
        await collect_stream(worker.stream(chat("again")))
        assert server.posts[-1].body.get("stream", False) is False
        assert len(server.posts) == 3


async def test_error_event_in_a_stream_is_typed() -> None:
    error = {"error": {"message": "prompt is too long", "code": 400}}
    with ScriptedServer([Reply(200, events=[error])]) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m")
        with pytest.raises(ContextLengthError):
            await collect_stream(worker.stream(chat("hi")))


@pytest.mark.slow
async def test_abort_closes_a_slow_stream() -> None:
    events = [chunk(f"t{i} ") for i in range(20)]
    with ScriptedServer([Reply(200, events=events, event_delay_s=0.5)]) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m")
        request = chat("hi")
        aborted_at: list[float] = []

        async def abort_soon() -> None:
            # while the stream waits for its next event, 0.5s away
            await asyncio.sleep(0.1)
            aborted_at.append(time.perf_counter())
            assert await worker.abort(request.request_id)

        final = None
        aborter = None
        async for delta in worker.stream(request):
            if delta.completion is not None:
                final = delta.completion
            elif aborter is None:
                aborter = asyncio.create_task(abort_soon())
        took = time.perf_counter() - aborted_at[0]
        assert aborter is not None
        await aborter
        for _ in range(50):  # the server notices the closed connection at its next write
            if server.disconnects:
                break
            await asyncio.sleep(0.05)
    assert final is not None and final.finish_reason == "abort"
    assert final.text == "t0 " and final.usage.completion_tokens == 1
    assert took < 0.3
    assert server.disconnects == 1


async def test_abort_while_waiting_for_a_plain_reply() -> None:
    with ScriptedServer([Reply(200, chat_reply(), delay_s=3)]) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m")
        request = chat("hi")
        task = asyncio.create_task(worker.generate(request))
        await asyncio.sleep(0.3)
        started = time.perf_counter()
        assert await worker.abort(request.request_id)
        out = await task
    assert out.finish_reason == "abort" and out.text == ""
    assert time.perf_counter() - started < 1


async def test_abort_while_queued_for_a_slot() -> None:
    with ScriptedServer([Reply(200, chat_reply(), delay_s=1.0)]) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m", max_concurrency=1)
        first, second = chat("one"), chat("two")
        running = asyncio.create_task(worker.generate(first))
        await asyncio.sleep(0.1)
        queued = asyncio.create_task(collect_stream(worker.stream(second)))
        await asyncio.sleep(0.1)
        aborted_at = time.perf_counter()
        assert await worker.abort(second.request_id)
        out = await queued
        assert time.perf_counter() - aborted_at < 0.5  # not after the first one's 1s
        assert out.finish_reason == "abort" and out.text == ""
        assert (await running).text == "hello"
    assert len(server.posts) == 1


async def test_closed_worker_raises_worker_dead() -> None:
    worker = OpenAIWorker(base_url="http://127.0.0.1:9/v1", model="m")
    await worker.close()
    with pytest.raises(WorkerDead):
        await worker.generate(chat("hi"))


# ----- config, registry, wire format --------------------------------------------------------


def test_registry_builds_the_openai_kind() -> None:
    worker = make_worker("openai:http://127.0.0.1:8000/v1", model="m", worker_id="w1")
    assert isinstance(worker, OpenAIWorker)
    assert worker.config.base_url == "http://127.0.0.1:8000/v1"
    assert worker.worker_id == "w1" and worker.capabilities.model == "m"
    with pytest.raises(ConfigError, match="http"):
        make_worker("openai:127.0.0.1:8000")
    with pytest.raises(ConfigError, match="chat_template"):
        OpenAIWorker(endpoint="completions")
    with pytest.raises(ConfigError, match="temperature: Extra inputs"):
        OpenAIWorker(temperature=0.5)


VLLM_CONTEXT_ERROR = (
    '{"object": "error", "type": "BadRequestError", "code": 400, "message": "This '
    "model's maximum context length is 2048 tokens. However, you requested 2100 tokens "
    '(2000 in the messages, 100 in the completion)."}'
)
LLAMA_CPP_CONTEXT_ERROR = (
    '{"error": {"code": 400, "message": "the request exceeds the available context size, '
    'try increasing it", "type": "exceed_context_size_error", "n_prompt_tokens": 5000, '
    '"n_ctx": 4096}}'
)


@pytest.mark.parametrize(
    ("body", "sizes"), [(VLLM_CONTEXT_ERROR, (2000, 2048)), (LLAMA_CPP_CONTEXT_ERROR, (5000, 4096))]
)
def test_context_errors_of_other_servers(body: str, sizes: tuple[int, int]) -> None:
    error = request_error(400, ErrorBody.parse(body), "the server")
    assert isinstance(error, ContextLengthError)
    assert (error.prompt_tokens, error.context_length) == sizes


def test_other_error_bodies() -> None:
    missing = request_error(404, ErrorBody.parse('{"detail": "Not Found"}'), "the server")
    assert isinstance(missing, BadRequestError) and "base_url" in str(missing)
    assert isinstance(request_error(403, ErrorBody.parse("nope"), "x"), AuthenticationError)


def test_event_stream_decoder() -> None:
    decoder = EventStreamDecoder()
    lines = [": ping", "event: message", 'data: {"a":', "data: 1}", "", "", "data: [DONE]"]
    events = [e for line in lines if (e := decoder.feed(line)) is not None]
    assert events == ['{"a":\n1}']
    assert decoder.flush() == "[DONE]" and decoder.flush() is None


def test_split_tokens_keeps_the_total() -> None:
    assert split_tokens(10, ["aaa", "a", "aaaaaa"]) == [3, 1, 6]
    assert sum(split_tokens(7, ["ab", "ab", "ab"])) == 7
    assert split_tokens(0, ["x"]) == [0]
