"""OpenAI-compatible servers as they come: dialects, model choice, cut streams, n, sampling fields.

Edge cases run against the scripted server (which records every body it receives); the
end-to-end case runs self-consistency through llama_cpp.server started with its defaults.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from openai_server import Reply, ScriptedServer, chat_reply, llama_server

from threadloom.errors import ConfigError
from threadloom.types import ChatMessage, GenerationRequest, SamplingParams, StructuredOutputs
from threadloom.workers.base import collect_stream
from threadloom.workers.openai.worker import OpenAIWorker
from threadloom.workers.registry import make_worker


def _listing(*ids: str, owner: str = "vllm") -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": i, "object": "model", "owned_by": owner} for i in ids],
    }


def _chat(text: str = "hi", prefix: str = "", **params: Any) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage(role="user", content=text),),
        prefix=prefix,
        params=SamplingParams(**params),
    )


def _chunk(text: str, finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


# ----- the model is chosen, never guessed ---------------------------------------------------


async def test_a_server_listing_several_models_needs_one_named() -> None:
    listing = _listing("qwen-7b", "qwen-7b-lora")
    with ScriptedServer([Reply(200, chat_reply("ok"))], models=listing) as server:
        unnamed = OpenAIWorker(base_url=server.base_url)
        with pytest.raises(ConfigError, match=r"several models.*qwen-7b-lora.*model="):
            await unnamed.generate(_chat())
        assert server.posts == []  # nothing was sent to a guessed model
        named = make_worker(f"openai:{server.base_url}#model=qwen-7b-lora")
        await named.generate(_chat())
        assert server.posts[-1].body["model"] == "qwen-7b-lora"
        await unnamed.close()
        await named.close()


async def test_the_only_listed_model_is_taken_and_looked_up_once() -> None:
    with ScriptedServer([Reply(200, chat_reply("ok"))], models=_listing("solo")) as server:
        worker = OpenAIWorker(base_url=server.base_url)
        await asyncio.gather(*(worker.generate(_chat()) for _ in range(4)))
        assert {p.body["model"] for p in server.posts} == {"solo"}
        assert sum(1 for s in server.seen if s.method == "GET") == 1
        await worker.close()


# ----- sampling fields by dialect -----------------------------------------------------------

FIELDS = {
    "top_k": 5,
    "min_p": 0.1,
    "repetition_penalty": 1.2,
    "presence_penalty": 0.5,
    "frequency_penalty": 0.3,
    "min_tokens": 4,
    "ignore_eos": True,
    "stop_token_ids": [7, 9],
    "logit_bias": {11: -100.0},
    "seed": 3,
}


async def test_vllm_receives_every_sampling_field_by_its_own_name() -> None:
    with ScriptedServer([Reply(200, chat_reply("ok"))], models=_listing("m")) as server:
        worker = OpenAIWorker(base_url=server.base_url)
        await worker.generate(_chat(**FIELDS))
        body = server.posts[0].body
        await worker.close()
    expected = {**FIELDS, "logit_bias": {"11": -100.0}}
    assert {k: body[k] for k in expected} == expected


async def test_llama_cpp_server_gets_its_names_and_threadloom_defaults() -> None:
    listing = _listing("m.gguf", owner="me")
    with ScriptedServer([Reply(200, chat_reply("ok"))], models=listing) as server:
        worker = OpenAIWorker(base_url=server.base_url)
        await worker.generate(_chat(repetition_penalty=1.3))
        body = server.posts[0].body
        # the server's own defaults (top_k=40, min_p=0.05, repeat_penalty=1.1) are overruled
        assert (body["top_k"], body["min_p"], body["repeat_penalty"]) == (0, 0.0, 1.3)
        assert "repetition_penalty" not in body
        with pytest.raises(ConfigError, match=r"worker .* cannot honour ignore_eos"):
            await worker.generate(_chat(ignore_eos=True))
        assert len(server.posts) == 1  # the refused request never left
        await worker.close()


async def test_a_plain_openai_server_refuses_vllm_only_fields_before_sending() -> None:
    with ScriptedServer(
        [Reply(200, chat_reply("ok"))], models=_listing("gpt", owner="openai")
    ) as s:
        worker = OpenAIWorker(base_url=s.base_url, worker_id="api")
        with pytest.raises(ConfigError, match=r"worker api cannot honour min_p=0.2.*openai"):
            await worker.generate(_chat(min_p=0.2))
        await worker.generate(_chat(presence_penalty=1.0, logit_bias={5: 2.0}, seed=1))
        body = s.posts[-1].body
        assert (body["presence_penalty"], body["logit_bias"], body["seed"]) == (1.0, {"5": 2.0}, 1)
        assert len(s.posts) == 1
        await worker.close()


# ----- structured output by dialect ---------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}


@pytest.mark.parametrize(
    ("owner", "structured", "expected"),
    [
        ("vllm", {"json_schema": SCHEMA}, {"structured_outputs": {"json": SCHEMA}}),
        ("vllm", {"choice": ["yes", "no"]}, {"structured_outputs": {"choice": ["yes", "no"]}}),
        ("sglang", {"regex": "[0-9]+"}, {"regex": "[0-9]+"}),
        (
            "openai",
            {"json_schema": SCHEMA},
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "schema": SCHEMA},
                }
            },
        ),
        ("openai", {"json_object": True}, {"response_format": {"type": "json_object"}}),
    ],
)
async def test_structured_output_is_sent_as_the_server_takes_it(
    owner: str, structured: dict[str, Any], expected: dict[str, Any]
) -> None:
    with ScriptedServer([Reply(200, chat_reply("1"))], models=_listing("m", owner=owner)) as s:
        worker = OpenAIWorker(base_url=s.base_url)
        await worker.generate(_chat(structured_outputs=structured))
        body = s.posts[0].body
        await worker.close()
    assert {k: body[k] for k in expected} == expected


async def test_llama_cpp_server_gets_a_gbnf_grammar_and_openai_refuses_regex() -> None:
    with ScriptedServer([Reply(200, chat_reply("yes"))], models=_listing("m", owner="me")) as s:
        worker = OpenAIWorker(base_url=s.base_url)
        await worker.generate(_chat(structured_outputs={"choice": ["yes", "no"]}))
        assert s.posts[0].body["grammar"].strip() == 'root ::= "yes" | "no"'
        await worker.close()
    with ScriptedServer([Reply(200, chat_reply("1"))], models=_listing("m", owner="openai")) as s:
        worker = OpenAIWorker(base_url=s.base_url, worker_id="api")
        with pytest.raises(ConfigError, match=r"worker api cannot honour structured_outputs.regex"):
            await worker.generate(_chat(structured_outputs=StructuredOutputs(regex="[0-9]+")))
        assert s.posts == []
        await worker.close()


# ----- cut streams, plain requests, n -------------------------------------------------------


async def test_a_cut_stream_is_resumed_where_the_server_continues_a_prefix() -> None:
    replies = [
        Reply(200, events=[_chunk("The ans"), "[DONE]"]),  # cut: no finish reason
        Reply(200, chat_reply("wer is 4.", usage={"prompt_tokens": 9, "completion_tokens": 3})),
    ]
    with ScriptedServer(replies, models=_listing("m")) as server:
        worker = OpenAIWorker(base_url=server.base_url, streaming="always")
        deltas = [d async for d in worker.stream(_chat(max_tokens=20))]
        resumed = server.posts[1].body
        await worker.close()
    final = deltas[-1].completion
    assert final is not None and final.text == "The answer is 4." and final.finish_reason == "stop"
    assert "".join(d.text for d in deltas) == "The answer is 4."
    assert resumed.get("stream", False) is False
    assert resumed["messages"][-1] == {"role": "assistant", "content": "The ans"}
    assert resumed["continue_final_message"] is True
    assert resumed["max_tokens"] == 19  # one token was already received


async def test_never_streaming_sends_plain_requests_and_an_abort_closes_them() -> None:
    slow = Reply(200, chat_reply("late"), delay_s=2.0)
    with ScriptedServer([slow], models=_listing("m")) as server:
        worker = OpenAIWorker(base_url=server.base_url, streaming="never")
        request = _chat()
        task = asyncio.create_task(collect_stream(worker.stream(request)))
        while not server.posts:
            await asyncio.sleep(0.02)
        assert await worker.abort(request.request_id)
        final = await asyncio.wait_for(task, 5)
        assert final.finish_reason == "abort" and final.text == ""
        assert server.posts[0].body.get("stream", False) is False
        await worker.close()


async def test_n_is_one_request_where_honoured_and_split_where_not() -> None:
    two = {
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
            for i, t in enumerate(("a", "b"))
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2},
    }
    with ScriptedServer([Reply(200, two)], models=_listing("m")) as server:
        worker = OpenAIWorker(base_url=server.base_url)
        got = await worker.generate_n(_chat(), 2)
        assert [c.text for c in got] == ["a", "b"]
        assert [p.body.get("n") for p in server.posts] == [2]
        await worker.close()
    with ScriptedServer([Reply(200, chat_reply("x"))], models=_listing("m", owner="me")) as server:
        worker = OpenAIWorker(base_url=server.base_url)
        got = await worker.generate_n(_chat(seed=5), 3)
        assert len(got) == 3
        assert [p.body.get("n") for p in server.posts] == [None, None, None]
        assert sorted(p.body["seed"] for p in server.posts) == [5, 6, 7]
        await worker.close()


# ----- llama_cpp.server as users start it ---------------------------------------------------


@pytest.mark.slow
async def test_self_consistency_through_llama_cpp_server_with_its_defaults(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from threadloom import arun
    from threadloom.data.arithmetic import generate_arithmetic

    problems = generate_arithmetic(seed=3, limit=4)
    with llama_server(server_defaults=True) as base_url:
        worker = OpenAIWorker(base_url=base_url, max_concurrency=8)
        try:
            params = SamplingParams(max_tokens=48)
            results = [
                await arun(p, "self-consistency:n=8", worker=worker, params=params, seed=i)
                for i, p in enumerate(problems)
            ]
            # structured output through the server's grammar support
            schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
            replies = await asyncio.gather(
                *(
                    worker.generate(
                        _chat(
                            "Give a number as JSON.",
                            max_tokens=40,
                            seed=s,
                            structured_outputs={"json_schema": schema},
                        )
                    )
                    for s in range(4)
                )
            )
        finally:
            await worker.close()
    # the server cut streams short, and every one was recovered: on_error="fail" (the
    # default) would have raised on any failed sample
    assert any("later generations use plain requests" in r.getMessage() for r in caplog.records)
    for result in results:
        assert len(result.candidates) == 8
    for reply in replies:
        assert isinstance(json.loads(reply.text)["n"], int)


# ----- from the command line ----------------------------------------------------------------


def test_the_cli_names_the_model_and_sends_sampling_fields_and_structured_output() -> None:
    from typer.testing import CliRunner

    from threadloom.cli import application as cli

    listing = _listing("small", "large")
    with ScriptedServer([Reply(200, chat_reply("yes"))], models=listing) as server:
        outcome = CliRunner().invoke(
            cli.app,
            [
                "run", "Is water wet?", "-s", "single",
                "--worker", f"openai:{server.base_url}#model=large",
                "--param", "min_p=0.1", "--param", "stop_token_ids=[2]",
                "--param", 'structured_outputs={"choice": ["yes", "no"]}',
            ],
        )  # fmt: skip
        bodies = [p.body for p in server.posts]
    assert outcome.exit_code == 0, outcome.output
    assert len(bodies) == 1
    body = bodies[0]
    assert (body["model"], body["min_p"], body["stop_token_ids"]) == ("large", 0.1, [2])
    assert body["structured_outputs"] == {"choice": ["yes", "no"]}


def test_the_cli_refuses_an_unknown_param_before_any_request() -> None:
    from typer.testing import CliRunner

    from threadloom.cli import application as cli

    with ScriptedServer([Reply(200, chat_reply("yes"))], models=_listing("m")) as server:
        outcome = CliRunner().invoke(
            cli.app, ["run", "hi", "--worker", f"openai:{server.base_url}", "--param", "topk=3"]
        )
        assert server.seen == []
    assert outcome.exit_code == 2 and "not a sampling field" in " ".join(outcome.output.split())
