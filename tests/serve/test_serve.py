"""`threadloom serve` against the official `openai` SDK, on a real uvicorn server on 127.0.0.1.

A scripted FakeWorker stands in for the model so these run in seconds; the same server on the
bundled model is exercised in test_serve_e2e.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from serving import serving, wait_until
from typer.testing import CliRunner

from threadloom.errors import ConfigError
from threadloom.serve import ServeConfig
from threadloom.workers.fake import FakeWorker

REPLIES = ("The sum is 42", "I get 41 here", "It is 42", "Surely 42 then")
ASK = [{"role": "user", "content": "What is 17 + 25?"}]


def client(base_url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=20)


@pytest.fixture
def worker() -> FakeWorker:
    return FakeWorker(REPLIES)


@pytest.fixture
def base_url(worker: FakeWorker) -> Iterator[str]:
    with serving(worker) as url:
        yield url


def test_chat_answer_with_n_choices_and_usage_counted_on_the_worker(
    worker: FakeWorker, base_url: str
) -> None:
    reply = client(base_url).chat.completions.create(
        model="self-consistency:n=4", messages=ASK, n=2
    )
    assert len(worker.requests) == 4
    assert [c.index for c in reply.choices] == [0, 1]
    best = reply.choices[0]
    assert best.message.role == "assistant"
    assert best.message.content in REPLIES and "42" in best.message.content
    assert best.finish_reason == "stop"
    extras = reply.model_extra["threadloom"]
    assert extras["answer"] == "42" and extras["candidates"] >= 2
    usage = reply.usage
    assert usage is not None
    assert usage.completion_tokens == worker.tokens_emitted
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.model_extra["threadloom"]["generations"] == len(worker.requests)


def test_request_fields_reach_the_worker(worker: FakeWorker, base_url: str) -> None:
    client(base_url).chat.completions.create(
        model="best-of-n:n=2",
        messages=[{"role": "system", "content": "Be brief."}, *ASK],
        temperature=0.2,
        top_p=0.5,
        max_completion_tokens=3,
        stop=["then"],
        seed=7,
        user="someone",
        extra_body={"an_unknown_field": {"ignored": True}},
    )
    sent = worker.requests[0]
    assert sent.messages is not None
    assert [m.role for m in sent.messages] == ["system", "user"]
    assert sent.messages[0].content == "Be brief."
    assert sent.params.temperature == 0.2 and sent.params.top_p == 0.5
    assert sent.params.max_tokens == 3 and sent.params.stop == ("then",)


def test_the_seed_fixes_every_samples_seed(worker: FakeWorker, base_url: str) -> None:
    for seed in (11, 11, 12):
        client(base_url).chat.completions.create(model="best-of-n:n=3", messages=ASK, seed=seed)
    seeds = [r.params.seed for r in worker.requests]
    assert None not in seeds
    assert seeds[0:3] == seeds[3:6] != seeds[6:9]


def test_text_completion(worker: FakeWorker, base_url: str) -> None:
    reply = client(base_url).completions.create(model="fake", prompt="Add 17 and 25.")
    assert reply.choices[0].text == REPLIES[0]
    assert worker.requests[0].messages is not None
    assert worker.requests[0].messages[-1].content == "Add 17 and 25."
    assert reply.usage is not None and reply.usage.completion_tokens == worker.tokens_emitted


async def test_async_stream_of_a_plain_model_sends_the_tokens_as_decoded(
    worker: FakeWorker, base_url: str
) -> None:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0) as aclient:
        chunks = [
            chunk
            async for chunk in await aclient.chat.completions.create(
                model="fake", messages=ASK, stream=True, stream_options={"include_usage": True}
            )
        ]
    pieces = [c.choices[0].delta.content for c in chunks if c.choices]
    pieces = [piece for piece in pieces if piece]
    assert len(pieces) == len(REPLIES[0].split())  # one chunk per decoded token
    assert "".join(pieces) == REPLIES[0]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == worker.tokens_emitted
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"


async def test_async_stream_of_a_voting_strategy_shows_the_work_then_the_answer(
    worker: FakeWorker, base_url: str
) -> None:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0) as aclient:
        stream = await aclient.chat.completions.create(
            model="self-consistency:n=4",
            messages=ASK,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    progress = [c.model_extra["threadloom"] for c in chunks if c.model_extra.get("threadloom")]
    kinds = [p["type"] for p in progress]
    assert kinds.count("branch_start") == 4 and kinds.count("branch_end") == 4
    deltas = [p for p in progress if p["type"] == "delta"]
    assert len(deltas) == worker.tokens_emitted
    assert "select" in kinds
    # the answer comes after every branch ended
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert content[-1].choices[0].delta.content in REPLIES
    assert chunks.index(content[-1]) > max(
        i
        for i, c in enumerate(chunks)
        if (c.model_extra.get("threadloom") or {}).get("type") == "branch_end"
    )
    usage = chunks[-1].usage
    assert usage is not None and usage.model_extra["threadloom"]["generations"] == 4
    assert usage.completion_tokens == worker.tokens_emitted


def test_sync_stream_with_n_choices(base_url: str) -> None:
    stream = client(base_url).chat.completions.create(
        model="best-of-n:n=3", messages=ASK, n=2, stream=True
    )
    texts: dict[int, str] = {}
    finished: set[int] = set()
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finished.add(choice.index)
    assert finished == {0, 1}
    assert all(texts[i] in REPLIES for i in (0, 1))


def test_unknown_strategy_is_a_404_in_openai_shape(worker: FakeWorker, base_url: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(base_url).chat.completions.create(model="tree-of-lies:n=3", messages=ASK)
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert error["type"] == "invalid_request_error" and "best-of-n" in error["message"]
    assert worker.requests == []


def test_bad_strategy_option_and_bad_values_are_400s(worker: FakeWorker, base_url: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(base_url).chat.completions.create(model="best-of-n:depth=3", messages=ASK)
    assert caught.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as caught:
        client(base_url).chat.completions.create(model="fake", messages=ASK, temperature=9)
    assert caught.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as caught:
        client(base_url).chat.completions.create(model="fake", messages=[])
    assert caught.value.body["param"] == "messages"
    assert worker.requests == []


def test_n_over_the_cap_is_refused_before_any_generation(worker: FakeWorker) -> None:
    with serving(worker, max_n=4) as url:
        with pytest.raises(openai.BadRequestError) as caught:
            client(url).chat.completions.create(model="fake", messages=ASK, n=5)
        assert caught.value.body["param"] == "n"
        assert caught.value.body["code"] == "over_cap"
        with pytest.raises(openai.BadRequestError) as caught:
            client(url).chat.completions.create(model="self-consistency:n=4096", messages=ASK)
        assert "n=4096" in caught.value.body["message"]
        with pytest.raises(openai.BadRequestError) as caught:
            client(url).chat.completions.create(model="adaptive-consistency:max_n=64", messages=ASK)
        assert "max_n=64" in caught.value.body["message"]
        with pytest.raises(openai.BadRequestError):
            client(url).chat.completions.create(
                model="fake",
                messages=ASK,
                extra_body={"threadloom": {"budget": {"max_completion_tokens": 10**9}}},
            )
    assert worker.requests == []


def test_a_missing_or_wrong_key_is_a_401(worker: FakeWorker) -> None:
    with serving(worker, api_key="s3cret") as url:
        with pytest.raises(openai.AuthenticationError) as caught:
            client(url, "wrong").chat.completions.create(model="fake", messages=ASK)
        assert caught.value.body["code"] == "invalid_api_key"
        missing = httpx.post(f"{url}/chat/completions", json={"model": "fake", "messages": ASK})
        assert missing.status_code == 401
        assert set(missing.json()["error"]) == {"message", "type", "param", "code"}
        assert httpx.get(url.removesuffix("/v1") + "/metrics").status_code == 401
        assert worker.requests == []
        reply = client(url, "s3cret").chat.completions.create(model="fake", messages=ASK)
        assert reply.choices[0].message.content == REPLIES[0]


def test_extra_body_chooses_strategy_verifier_and_budget(worker: FakeWorker, base_url: str) -> None:
    reply = client(base_url).chat.completions.create(
        model="fake",
        messages=ASK,
        extra_body={
            "threadloom": {
                "strategy": "best-of-n:n=8",
                "verifier": "regex:42",
                "budget": {"max_generations": 3},
            }
        },
    )
    assert len(worker.requests) == 3  # the budget, not n=8, decided
    extras = reply.model_extra["threadloom"]
    assert extras["strategy"] == "best-of-n:n=8" and extras["truncated"] is True
    assert reply.choices[0].model_extra["threadloom"]["scores"]["regex"] == 1.0
    with pytest.raises(openai.BadRequestError) as caught:
        client(base_url).chat.completions.create(
            model="fake", messages=ASK, extra_body={"threadloom": {"verifier": "oracle-of-delphi"}}
        )
    assert caught.value.body["param"] == "threadloom.verifier"


def test_models_lists_the_model_strategies_and_named_graphs(tmp_path: Path) -> None:
    (tmp_path / "vote3.yaml").write_text(
        "nodes:\n  a: best-of-n:n=2\n  b: self-consistency:n=2\n"
        "  final: {strategy: vote, inputs: [a, b]}\n"
    )
    worker = FakeWorker(REPLIES)
    with serving(worker, graph_dir=tmp_path, model_name="tiny") as url:
        ids = [m.id for m in client(url).models.list()]
        assert ids[0] == "tiny" and "vote3" in ids and "self-consistency" in ids
        reply = client(url).chat.completions.create(model="vote3@tiny", messages=ASK)
        assert len(worker.requests) == 4
        assert reply.model_extra["threadloom"]["family"] == "graph:vote3"
        with pytest.raises(openai.NotFoundError):
            client(url).chat.completions.create(model="best-of-n:n=2@gpt-9", messages=ASK)


def test_oversized_and_malformed_bodies(worker: FakeWorker) -> None:
    with serving(worker, max_body_bytes=2048) as url:
        big = {"model": "fake", "messages": [{"role": "user", "content": "x" * 5000}]}
        answer = httpx.post(f"{url}/chat/completions", json=big)
        assert answer.status_code == 413 and answer.json()["error"]["code"] == "body_too_large"
        answer = httpx.post(f"{url}/chat/completions", content=b"{not json")
        assert answer.status_code == 400 and answer.json()["error"]["message"]
        answer = httpx.get(f"{url}/nowhere")
        assert answer.status_code == 404 and "error" in answer.json()
    assert worker.requests == []


def _assert_decoding_stopped(worker: FakeWorker, of: int) -> None:
    emitted = worker.tokens_emitted
    time.sleep(0.2)  # ten tokens' time: nothing more may be decoded
    assert worker.tokens_emitted == emitted < of


def _slow_worker() -> FakeWorker:
    return FakeWorker((" ".join(["tok"] * 400),), token_delay_s=0.02)


def test_a_client_that_leaves_mid_stream_cancels_its_generations() -> None:
    worker = _slow_worker()
    with serving(worker) as url:
        body = {"model": "self-consistency:n=4", "messages": ASK, "stream": True}
        with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=20) as answer:
            lines = answer.iter_lines()
            seen = 0
            for line in lines:
                seen += "delta" in line
                if seen >= 8:
                    break
            assert worker.in_flight == 4
        # the connection is closed: every generation is aborted on the worker within a second
        assert wait_until(lambda: worker.in_flight == 0, 1.0)
        _assert_decoding_stopped(worker, of=4 * 400)
        metrics = httpx.get(url.removesuffix("/v1") + "/metrics").text
        assert _sample(metrics, "threadloom_runs_total", outcome="cancelled") == 1


def test_a_client_that_leaves_a_plain_request_cancels_its_run() -> None:
    worker = _slow_worker()
    with serving(worker) as url:
        body = {"model": "best-of-n:n=3", "messages": ASK}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/chat/completions", json=body, timeout=0.5)
        assert wait_until(lambda: worker.in_flight == 0, 1.0)
        _assert_decoding_stopped(worker, of=3 * 400)


@pytest.mark.slow
def test_past_the_queue_bound_the_server_answers_429() -> None:
    worker = _slow_worker()
    with serving(worker, max_concurrent_runs=1, max_queued_runs=1) as url:
        body = {"model": "fake", "messages": ASK}
        done: list[int] = []

        def send() -> None:
            try:
                done.append(httpx.post(f"{url}/chat/completions", json=body, timeout=2).status_code)
            except httpx.TimeoutException:
                done.append(0)

        senders = [threading.Thread(target=send) for _ in range(2)]
        for sender in senders:
            sender.start()
        health = url.removesuffix("/v1") + "/health"
        assert wait_until(lambda: httpx.get(health).json()["runs_queued"] == 1, 5.0), (
            "one run executing, one waiting"
        )
        answer = httpx.post(f"{url}/chat/completions", json=body)
        assert answer.status_code == 429
        assert int(answer.headers["Retry-After"]) >= 1
        assert answer.json()["error"]["code"] == "queue_full"
        assert len(worker.requests) == 1  # only the running one reached the worker
        with pytest.raises(openai.RateLimitError):
            client(url).chat.completions.create(model="fake", messages=ASK)
        metrics = httpx.get(url.removesuffix("/v1") + "/metrics").text
        assert _sample(metrics, "threadloom_runs_total", outcome="rejected") == 2
        for sender in senders:
            sender.join()


def _sample(metrics: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    total = 0.0
    for line in metrics.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_metrics_counters_move(worker: FakeWorker, base_url: str) -> None:
    metrics_url = base_url.removesuffix("/v1") + "/metrics"
    before = httpx.get(metrics_url).text
    client(base_url).chat.completions.create(model="self-consistency:n=4", messages=ASK)
    after = httpx.get(metrics_url).text
    family = {"strategy": "self-consistency"}
    assert _sample(before, "threadloom_runs_total", **family) == 0
    assert _sample(after, "threadloom_runs_total", outcome="ok", **family) == 1
    assert _sample(after, "threadloom_generations_total", **family) == 4
    assert _sample(after, "threadloom_completion_tokens_total", **family) == worker.tokens_emitted
    assert _sample(after, "threadloom_run_seconds_count", **family) == 1
    assert _sample(after, "threadloom_runs_in_flight") == 0
    assert "threadloom_runs_queued" in after


def test_health(base_url: str) -> None:
    health = httpx.get(base_url.removesuffix("/v1") + "/health").json()
    assert health == {"status": "ok", "model": "fake", "runs_in_flight": 0, "runs_queued": 0}


def test_a_public_address_needs_a_key() -> None:
    with pytest.raises(ConfigError, match="API key"):
        ServeConfig(host="0.0.0.0").check_security()
    ServeConfig(host="0.0.0.0", api_key="k").check_security()
    ServeConfig(host="::1").check_security()
    with pytest.raises(ConfigError, match="empty"):
        ServeConfig(api_key=" ").check_security()


def test_the_cli_refuses_a_public_address_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from threadloom.cli.application import app

    monkeypatch.delenv("THREADLOOM_API_KEY", raising=False)
    outcome = CliRunner().invoke(app, ["serve", "--worker", "fake", "--host", "0.0.0.0"])
    assert outcome.exit_code != 0
    assert isinstance(outcome.exception, ConfigError)
    assert "API key" in str(outcome.exception)


def test_prompts_and_answers_are_not_logged(
    worker: FakeWorker, base_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "my-private-question-7781"
    with caplog.at_level("INFO"):
        client(base_url).chat.completions.create(
            model="best-of-n:n=2", messages=[{"role": "user", "content": secret}]
        )
    assert caplog.records, "requests are logged at INFO"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert secret not in logged and REPLIES[0] not in logged


# ----- OpenTelemetry ------------------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """An in-memory exporter on the process's tracer provider (installed once)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


def _tree(exporter: InMemorySpanExporter) -> tuple[ReadableSpan, list[ReadableSpan]]:
    finished = list(exporter.get_finished_spans())
    runs = [s for s in finished if s.name == "threadloom.run"]
    assert len(runs) == 1
    run = runs[0]
    inside = [s for s in finished if s.context.trace_id == run.context.trace_id and s is not run]
    return run, inside


def test_the_server_run_becomes_a_span_tree(
    worker: FakeWorker, base_url: str, spans: InMemorySpanExporter
) -> None:
    client(base_url).chat.completions.create(
        model="best-of-n:n=3", messages=ASK, extra_body={"threadloom": {"verifier": "regex:42"}}
    )
    run, inside = _tree(spans)
    assert run.attributes["threadloom.strategy"] == "best-of-n:n=3"
    assert run.attributes["threadloom.generations"] == 3
    generations = [s for s in inside if s.name == "threadloom.generation"]
    assert len(generations) == 3
    for span in generations:
        assert span.parent.span_id == run.context.span_id
        assert span.attributes["gen_ai.usage.output_tokens"] > 0
        assert span.end_time >= span.start_time
    scores = [s for s in inside if s.name == "threadloom.score"]
    assert len(scores) == 3
    by_id = {s.context.span_id: s for s in generations}
    assert all(s.parent.span_id in by_id for s in scores)
    assert {s.attributes["threadloom.value"] for s in scores} == {0.0, 1.0}
    assert any(s.name == "threadloom.select" for s in inside)
    text = json.dumps([dict(s.attributes) for s in (run, *inside)])
    assert "17 + 25" not in text and REPLIES[0] not in text  # no prompts or answers


def test_the_python_api_emits_the_same_spans(spans: InMemorySpanExporter) -> None:
    from threadloom import arun

    worker = FakeWorker(REPLIES)
    plan = {
        "nodes": {
            "a": "best-of-n:n=2",
            "b": "self-consistency:n=2",
            "final": {"strategy": "vote", "inputs": ["a", "b"]},
        }
    }
    from threadloom.orchestrator.plan import graph_from_dict

    asyncio.run(arun("What is 17 + 25?", graph_from_dict(plan), worker=worker))
    _, inside = _tree(spans)
    nodes = {s.attributes["threadloom.node"]: s for s in inside if s.name == "threadloom.node"}
    assert len(nodes) == 3
    generations = [s for s in inside if s.name == "threadloom.generation"]
    assert len(generations) == 4
    node_ids = {s.context.span_id for s in nodes.values()}
    assert all(g.parent.span_id in node_ids for g in generations)


def test_a_cancelled_run_ends_its_spans_as_aborted(spans: InMemorySpanExporter) -> None:
    from threadloom import arun

    worker = FakeWorker((" ".join(["tok"] * 400),), token_delay_s=0.02)

    async def cancel_midway() -> None:
        task = asyncio.create_task(arun("q", "best-of-n:n=2", worker=worker))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_midway())
    run, inside = _tree(spans)
    assert run.status.status_code.name == "ERROR"
    generations = [s for s in inside if s.name == "threadloom.generation"]
    assert len(generations) == 2
    assert {s.attributes["threadloom.finish_reason"] for s in generations} == {"abort"}


def test_otel_variables_can_turn_exporting_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from threadloom.telemetry import configure_from_env

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert configure_from_env() is False


async def test_a_stream_whose_client_is_gone_before_the_first_event_frees_its_slot() -> None:
    from threadloom.serve.app import create_app

    worker = _slow_worker()
    app = create_app(ServeConfig(max_concurrent_runs=1, max_queued_runs=0), worker)
    state = app.state.threadloom
    body = json.dumps({"model": "best-of-n:n=2", "messages": ASK, "stream": True}).encode()
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, object]:
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            raise OSError("connection reset by peer")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    with pytest.raises(OSError):
        await app(scope, receive, send)
    assert state.admission.running == 0  # the one slot is free again
    assert worker.in_flight == 0
    assert (
        _sample(state.metrics.exposition().decode(), "threadloom_runs_total", outcome="cancelled")
        == 1
    )


def test_in_front_of_another_openai_server(worker: FakeWorker, base_url: str) -> None:
    from threadloom.workers.openai.worker import OpenAIWorker

    upstream = OpenAIWorker(base_url=base_url, model="fake", max_retries=0)
    with serving(upstream, model_name="upstream") as proxy:
        reply = client(proxy).chat.completions.create(
            model="self-consistency:n=3@upstream", messages=ASK, max_tokens=16
        )
    assert len(worker.requests) == 3  # every sample went to the server behind
    assert reply.model_extra["threadloom"]["answer"] == "42"
    assert reply.usage is not None and reply.usage.completion_tokens == worker.tokens_emitted
    assert worker.requests[0].params.max_tokens == 16


def _broken(request: object, index: int) -> str:
    raise RuntimeError("the backend broke")


def test_a_failing_backend_is_an_openai_shaped_server_error() -> None:
    with serving(FakeWorker(_broken)) as url:
        with pytest.raises(openai.InternalServerError) as caught:
            client(url).chat.completions.create(model="best-of-n:n=2", messages=ASK)
        assert caught.value.body["type"] == "server_error"
        with pytest.raises(openai.APIError) as streamed:
            for _ in client(url).chat.completions.create(
                model="best-of-n:n=2", messages=ASK, stream=True
            ):
                pass
        assert "failed" in streamed.value.message
        health = httpx.get(url.removesuffix("/v1") + "/health").json()
        assert health["runs_in_flight"] == 0
