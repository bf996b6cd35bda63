"""OpenAIWorker against servers that misbehave: malformed replies, usage that lies, replies past
max_tokens, streams kept open by keep-alive comments; and where its credentials may go.

Every server here is a scripted one on this machine (tests/openai_server.py)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator

import pytest
from openai_server import Reply, ScriptedServer, chat_reply, completion_reply, free_port
from pydantic import ValidationError

from threadloom.errors import ConfigError, WorkerError, WorkerUnavailable
from threadloom.types import ChatMessage, GenerationRequest, SamplingParams, TokenUsage
from threadloom.workers.base import collect_stream
from threadloom.workers.openai.tokens import MAX_BYTES_PER_TOKEN, TokenTally, text_within
from threadloom.workers.openai.worker import OpenAIWorker

NO_RETRIES = {"max_retries": 0}


def chat(text: str = "hi", **params: object) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage(role="user", content=text),),
        params=SamplingParams(**params),  # type: ignore[arg-type]
    )


def chunk(text: str, finish: str | None = None) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


def usage_chunk(**counts: object) -> dict[str, object]:
    return {"choices": [], "usage": counts}


# ----- malformed replies --------------------------------------------------------------------


def with_usage(**counts: object) -> dict[str, object]:
    reply = chat_reply("four")
    reply["usage"] = counts
    return reply


def with_choice(**fields: object) -> dict[str, object]:
    reply = chat_reply("four")
    reply["choices"][0].update(fields)
    return reply


MALFORMED_PLAIN = {
    "usage not a number": with_usage(prompt_tokens="abc", completion_tokens=2),
    "usage infinite": with_usage(prompt_tokens=5, completion_tokens=float("inf")),
    "usage negative": with_usage(prompt_tokens=5, completion_tokens=-100000),
    "usage fractional": with_usage(prompt_tokens=5, completion_tokens=2.5),
    "usage a list": {**chat_reply("four"), "usage": [1, 2]},
    "index not a number": with_choice(index="first"),
    "index fractional": with_choice(index=0.5),
    "logprob entry without a token": with_choice(logprobs={"content": [{"logprob": -0.1}]}),
    "logprob not finite": with_choice(
        logprobs={"content": [{"token": "four", "logprob": float("nan")}]}
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_PLAIN))
async def test_malformed_plain_reply_is_a_typed_error(case: str) -> None:
    with ScriptedServer([Reply(200, MALFORMED_PLAIN[case])]) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m", **NO_RETRIES)
        with pytest.raises(WorkerError, match="malformed reply") as caught:
            await worker.generate(chat())
    assert not isinstance(caught.value, WorkerUnavailable)  # the same reply would come back
    assert server.base_url in str(caught.value)
    assert len(server.posts) == 1


MALFORMED_STREAMS = {
    "usage infinite": [chunk("a", "stop"), usage_chunk(completion_tokens=float("inf"))],
    "usage negative": [chunk("a", "stop"), usage_chunk(completion_tokens=-5)],
    "index not a number": [
        {"choices": [{"index": "first", "delta": {"content": "a"}, "finish_reason": "stop"}]}
    ],
    "event without choices": [{"id": "x"}, chunk("a", "stop")],
}


@pytest.mark.parametrize("case", sorted(MALFORMED_STREAMS))
async def test_malformed_stream_is_a_typed_error(case: str) -> None:
    events = [*MALFORMED_STREAMS[case], "[DONE]"]
    with ScriptedServer([Reply(200, events=events)]) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m", **NO_RETRIES)
        with pytest.raises(WorkerError) as caught:
            await collect_stream(worker.stream(chat()))
    assert not isinstance(caught.value, WorkerUnavailable)
    assert len(server.posts) == 1


async def test_a_streamed_request_answered_without_choices_is_an_error() -> None:
    # a server that ignores "stream" and answers one JSON object, without choices
    with ScriptedServer([Reply(200, {"id": "x"})]) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m", **NO_RETRIES)
        with pytest.raises(WorkerError, match="without choices"):
            await collect_stream(worker.stream(chat()))
    assert len(server.posts) == 1


async def test_a_model_list_with_a_bad_context_length_is_an_error() -> None:
    models = {"data": [{"id": "m", "max_model_len": "lots"}]}
    with ScriptedServer([Reply(200, chat_reply())], models=models) as server:
        worker = OpenAIWorker(base_url=server.base_url, **NO_RETRIES)
        with pytest.raises(WorkerError, match="max_model_len"):
            await worker.generate(chat())
    assert server.posts == []  # nothing was generated on a server we could not read


def test_token_usage_refuses_negative_and_fractional_counts() -> None:
    with pytest.raises(ValidationError):
        TokenUsage(completion_tokens=-1)
    with pytest.raises(ValidationError):
        TokenUsage(prompt_tokens=2.5)  # type: ignore[arg-type]
    assert TokenUsage(prompt_tokens=3).prompt_tokens == 3


# ----- usage cross-checked with the client's own count --------------------------------------


async def test_under_reported_stream_usage_is_overruled_by_the_chunks_received() -> None:
    events = [chunk(w) for w in ("one ", "two ", "three ", "four ", "five ")]
    events += [chunk("six", "stop"), usage_chunk(prompt_tokens=4, completion_tokens=1), "[DONE]"]
    with ScriptedServer([Reply(200, events=events)]) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m")
        out = await collect_stream(worker.stream(chat(max_tokens=50)))
    assert out.text == "one two three four five six"
    assert out.usage.completion_tokens == 6  # six chunks came from at least six tokens
    assert out.usage.prompt_tokens == 4


async def test_under_reported_plain_usage_is_overruled_by_the_logprobs() -> None:
    reply = chat_reply("a b c d")
    reply["choices"][0]["logprobs"] = {
        "content": [{"token": t, "logprob": -0.5} for t in ("a", " b", " c", " d")]
    }
    reply["usage"] = {"prompt_tokens": 3, "completion_tokens": 0}
    with ScriptedServer([Reply(200, reply)]) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m")
        out = await worker.generate(chat(logprobs=1, max_tokens=50))
    assert out.usage.completion_tokens == 4


async def test_usage_above_max_tokens_is_booked_at_max_tokens() -> None:
    with ScriptedServer([Reply(200, with_usage(prompt_tokens=5, completion_tokens=900))]) as s:
        worker = OpenAIWorker(base_url=s.base_url, model="m")
        out = await worker.generate(chat(max_tokens=8))
    assert out.text == "four"
    assert out.usage.completion_tokens == 8


# ----- a server that ignores max_tokens -----------------------------------------------------


async def test_plain_reply_past_max_tokens_is_cut_on_the_client() -> None:
    flood = "x" * 100_000
    reply = with_usage(prompt_tokens=5, completion_tokens=5)
    reply["choices"][0]["message"]["content"] = flood
    with ScriptedServer([Reply(200, reply)]) as s:
        worker = OpenAIWorker(base_url=s.base_url, model="m")
        out = await worker.generate(chat(max_tokens=16))
    assert s.posts[0].body["max_tokens"] == 16
    assert out.text == flood[: 16 * MAX_BYTES_PER_TOKEN]
    assert out.finish_reason == "length"
    assert out.usage.completion_tokens == 16


async def test_plain_reply_past_max_tokens_is_cut_at_the_token_with_logprobs() -> None:
    tokens = [f" t{i}" for i in range(40)]
    reply = completion_reply("".join(tokens))
    reply["choices"][0]["logprobs"] = {
        "tokens": tokens,
        "token_logprobs": [-0.1] * len(tokens),
        "top_logprobs": None,
    }
    reply["usage"] = {"prompt_tokens": 2, "completion_tokens": 40}
    with ScriptedServer([Reply(200, reply)]) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m")
        out = await worker.generate(
            GenerationRequest(text="count", params=SamplingParams(max_tokens=10, logprobs=0))
        )
    assert out.text == "".join(tokens[:10])
    assert out.logprobs is not None and len(out.logprobs) == 10
    assert (out.finish_reason, out.usage.completion_tokens) == ("length", 10)


def endless_chunks() -> Iterator[dict[str, object]]:
    while True:
        yield chunk("tok ")


async def test_stream_past_max_tokens_is_cut_and_its_connection_closed() -> None:
    reply = Reply(200, events=endless_chunks, event_delay_s=0.01)
    with ScriptedServer([reply]) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m")
        deltas = [d async for d in worker.stream(chat(max_tokens=10))]
        for _ in range(100):  # the server notices the closed connection at its next write
            if server.disconnects:
                break
            await asyncio.sleep(0.02)
        sent_after_close = server.events_sent
        await asyncio.sleep(0.2)
    final = deltas[-1].completion
    assert final is not None
    assert [d.text for d in deltas[:-1]] == ["tok "] * 10
    assert (final.text, final.finish_reason) == ("tok " * 10, "length")
    assert final.usage.completion_tokens == 10
    assert server.disconnects == 1
    assert server.events_sent == sent_after_close  # nothing more was written: the stream ended


async def test_one_huge_chunk_is_cut_to_what_max_tokens_can_carry() -> None:
    events = [chunk("y" * 50_000), chunk("z", "stop"), "[DONE]"]
    with ScriptedServer([Reply(200, events=events)]) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m")
        out = await collect_stream(worker.stream(chat(max_tokens=4)))
    assert out.text == "y" * (4 * MAX_BYTES_PER_TOKEN)
    assert (out.finish_reason, out.usage.completion_tokens) == ("length", 4)


def test_token_tally_cuts_multi_token_chunks_at_the_limit() -> None:
    from threadloom.types import TokenLogprob

    tally = TokenTally(5)
    three = tuple(TokenLogprob(token=t, logprob=-1.0) for t in ("a", "b", "c"))
    assert tally.admit("abc", three) == ("abc", three)
    kept, logprobs = tally.admit("abc", three)
    assert kept == "ab" and logprobs == three[:2]
    assert tally.cut and tally.counted == 5
    assert tally.admit("more", None) == ("", None)
    # a lone surrogate (JSON allows one) is counted, not a crash
    assert text_within("\ud800" * 300, 1) == "\ud800" * (MAX_BYTES_PER_TOKEN // 3)


# ----- deadlines of a stream ----------------------------------------------------------------


def pings_forever(first: list[object]) -> Iterator[object]:
    yield from first
    while True:
        yield b": ping\n\n"


async def test_keep_alive_comments_cannot_hold_a_stream_past_its_total_deadline() -> None:
    reply = Reply(200, events=lambda: pings_forever([chunk("a")]), event_delay_s=0.05)
    with ScriptedServer([reply]) as server:
        # data keeps coming often enough for `timeout`: only the total deadline can end it
        worker = OpenAIWorker(base_url=server.base_url, model="m", timeout=30, stream_timeout=1.0)
        started = time.monotonic()
        texts: list[str] = []
        with pytest.raises(WorkerUnavailable, match="stream_timeout=1s"):
            async for delta in worker.stream(chat()):
                texts.append(delta.text)
        for _ in range(100):
            if server.disconnects:
                break
            await asyncio.sleep(0.02)
    assert texts == ["a"]
    assert server.disconnects == 1
    closed_after = server.disconnected_at[0] - started
    assert 1.0 <= closed_after < 10.0  # closed at the deadline, not at the 30 s idle limit


async def test_a_stream_of_only_comments_ends_after_timeout_without_data() -> None:
    reply = Reply(200, events=lambda: pings_forever([chunk("a")]), event_delay_s=0.05)
    with ScriptedServer([reply]) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m", timeout=0.5)
        started = time.monotonic()
        with pytest.raises(WorkerUnavailable, match="keep-alive comments do not count"):
            await collect_stream(worker.stream(chat()))
        for _ in range(100):
            if server.disconnects:
                break
            await asyncio.sleep(0.02)
    assert server.disconnects == 1
    assert 0.5 <= server.disconnected_at[0] - started < 10.0


# ----- credentials --------------------------------------------------------------------------


def outward_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


@pytest.fixture
def outward() -> str:
    address = outward_address()
    if address is None:
        pytest.skip("this machine has no address besides loopback")
    return address


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "*")


async def test_environment_key_is_not_sent_over_plain_http_to_another_host(
    monkeypatch: pytest.MonkeyPatch, outward: str, no_proxy: None
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary-not-real")
    with ScriptedServer([Reply(200, chat_reply())], host=outward) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m")
        out = await worker.generate(chat())
        await worker.close()
    assert out.text == "hello"
    assert "authorization" not in {name.lower() for name in server.posts[0].headers}


async def test_environment_key_goes_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary-not-real")
    with ScriptedServer([Reply(200, chat_reply())]) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m")
        await worker.generate(chat())
        await worker.close()
    assert server.posts[0].headers["Authorization"] == "Bearer sk-canary-not-real"


async def test_explicit_key_over_plain_http_needs_an_opt_in(outward: str, no_proxy: None) -> None:
    with ScriptedServer([Reply(200, chat_reply())], host=outward) as server:
        with pytest.raises(ConfigError, match="allow_key_over_http") as caught:
            OpenAIWorker(base_url=server.base_url, model="m", api_key="sk-canary-not-real")
        assert "sk-canary" not in str(caught.value)
        worker = OpenAIWorker(
            base_url=server.base_url,
            model="m",
            api_key="sk-canary-not-real",
            allow_key_over_http=True,
        )
        await worker.generate(chat())
        await worker.close()
    assert len(server.posts) == 1  # only the worker that was allowed to send anything
    assert server.posts[0].headers["Authorization"] == "Bearer sk-canary-not-real"


def test_url_credentials_to_another_host_need_an_opt_in() -> None:
    with pytest.raises(ConfigError, match="allow_key_over_http") as caught:
        OpenAIWorker(base_url="http://user:s3cretpw@192.0.2.1:8000/v1", model="m")
    assert "s3cretpw" not in str(caught.value)
    https = OpenAIWorker(base_url="https://user:s3cretpw@192.0.2.1:8000/v1", model="m")
    assert "s3cretpw" not in repr(https)


async def test_credentials_in_the_url_stay_out_of_repr_errors_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"http://user:s3cretpw@127.0.0.1:{free_port()}/v1"
    worker = OpenAIWorker(
        base_url=url, model="m", max_retries=1, backoff_s=0.01, max_backoff_s=0.02
    )
    caplog.set_level(logging.DEBUG)
    with pytest.raises(WorkerUnavailable) as caught:
        await worker.generate(chat())
    await worker.close()
    shown = [repr(worker), repr(worker.config), str(caught.value), caplog.text]
    assert all("s3cretpw" not in text for text in shown)
    assert "127.0.0.1" in str(caught.value)
    assert "retry 1 of 1" in caplog.text  # the retry was logged, without the password


async def test_url_credentials_reach_a_loopback_server_as_basic_auth() -> None:
    with ScriptedServer([Reply(200, chat_reply())]) as server:
        url = server.base_url.replace("http://", "http://user:s3cretpw@")
        worker = OpenAIWorker(base_url=url, model="m")
        await worker.generate(chat())
        await worker.close()
    assert server.posts[0].headers["Authorization"].startswith("Basic ")
